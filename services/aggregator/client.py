"""The aggregator as its clients (router, executors) use it: one channel, deadlines, safe retries.

RecordUpdate is idempotent by update_id, so retrying it after a timeout or an unavailable
aggregator can never record an update twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import grpc
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
from nija.common.v1 import common_pb2

from services.runtime.channels import bounded, open_channel
from services.runtime.errors import relay
from services.runtime.security import Security

log = logging.getLogger(__name__)

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class LedgerClient:
    def __init__(
        self, target: str, security: Security | None = None, timeout_s: float = 5.0, retry_for_s: float = 30.0
    ) -> None:
        self._channel = open_channel(target, security)
        self._stub = aggregator_pb2_grpc.AggregatorServiceStub(self._channel)
        self._timeout_s = timeout_s
        self._retry_for_s = retry_for_s

    async def close(self) -> None:
        await self._channel.close()

    async def create_order(
        self, signal: common_pb2.TradeSignal, timeout_s: float | None = None
    ) -> aggregator_pb2.CreateOrderResponse:
        """Waits for a connection (an aggregator restarting) rather than failing at once, and
        retries an attempt whose answer was lost under the same submission id, so the ledger
        tells us whether that attempt created the order: never two orders, never an order that
        nobody drives."""
        request = aggregator_pb2.CreateOrderRequest(signal=signal, submission_id=uuid.uuid4().hex)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + (timeout_s if timeout_s is not None else self._retry_for_s)
        delay = 0.05
        while True:
            try:
                return await self._stub.CreateOrder(
                    request, timeout=bounded(self._timeout_s, give_up_at - loop.time()), wait_for_ready=True
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRYABLE or loop.time() + delay >= give_up_at:
                    raise relay(exc) from None
                log.warning("ledger unavailable, retrying the order's creation", extra={"signal_id": signal.signal_id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def get_order(self, user_id: str, signal_id: str, timeout_s: float | None = None) -> aggregator_pb2.Order:
        try:
            response = await self._stub.GetOrder(
                aggregator_pb2.GetOrderRequest(user_id=user_id, signal_id=signal_id),
                timeout=bounded(self._timeout_s, timeout_s),
            )
        except grpc.aio.AioRpcError as exc:
            raise relay(exc) from None
        return response.order

    async def record(self, update: common_pb2.ExecutionUpdate) -> common_pb2.ExecutionUpdate:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._retry_for_s
        delay = 0.05
        while True:
            try:
                response = await self._stub.RecordUpdate(
                    aggregator_pb2.RecordUpdateRequest(update=update), timeout=self._timeout_s
                )
                return response.update
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRYABLE or loop.time() + delay > give_up_at:
                    raise relay(exc) from None
                log.warning("ledger unavailable, retrying", extra={"update_id": update.update_id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def watch_signal(
        self, user_id: str, signal_id: str, after_sequence: int, timeout_s: float
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        """A signal's persisted updates after `after_sequence`, ending with its terminal update."""
        call = self._stub.WatchUpdates(
            aggregator_pb2.WatchUpdatesRequest(
                user_id=user_id, signal_id=signal_id, after_sequence=after_sequence
            ),
            timeout=timeout_s,
        )
        try:
            async for response in call:
                yield response.update
        except grpc.aio.AioRpcError as exc:
            raise relay(exc) from None
