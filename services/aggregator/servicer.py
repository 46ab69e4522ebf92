"""gRPC adapter for the ledger: proto in -> ledger -> proto out. No rules live here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc

from services.aggregator.hub import Hub
from services.aggregator.ledger import Ledger
from services.aggregator.watch import watch
from services.runtime.errors import invalid, stream, unary


class AggregatorServicer(aggregator_pb2_grpc.AggregatorServiceServicer):
    def __init__(self, ledger: Ledger, hub: Hub, replay_page: int) -> None:
        self._ledger = ledger
        self._hub = hub
        self._replay_page = replay_page

    @unary
    async def CreateOrder(
        self, request: aggregator_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.CreateOrderResponse:
        result = await self._ledger.create_order(request.signal)
        return aggregator_pb2.CreateOrderResponse(
            created=result.created, order=result.order, update=result.update
        )

    @unary
    async def RecordUpdate(
        self, request: aggregator_pb2.RecordUpdateRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.RecordUpdateResponse:
        result = await self._ledger.record(request.update)
        return aggregator_pb2.RecordUpdateResponse(update=result.update, duplicate=result.duplicate)

    @stream
    async def WatchUpdates(
        self, request: aggregator_pb2.WatchUpdatesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[aggregator_pb2.WatchUpdatesResponse]:
        if not request.user_id:
            raise invalid("BAD_USER_ID", "user_id is required", field="user_id")
        updates = watch(
            self._ledger,
            self._hub,
            request.user_id,
            request.after_sequence,
            request.signal_id or None,
            self._replay_page,
        )
        async for update in updates:
            yield aggregator_pb2.WatchUpdatesResponse(update=update)

    @unary
    async def GetOrder(
        self, request: aggregator_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.GetOrderResponse:
        order = await self._ledger.get_order(request.user_id, request.signal_id)
        return aggregator_pb2.GetOrderResponse(order=order)
