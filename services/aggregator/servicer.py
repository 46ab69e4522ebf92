"""gRPC adapter for the ledger: proto in -> ledger -> proto out. No rules live here."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

import grpc
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc

from services.aggregator.hub import Hub
from services.aggregator.ledger import Ledger, Recorded
from services.aggregator.notifications import Notifications
from services.aggregator.watch import watch
from services.runtime.errors import ServiceError, refusal_pb, stream, unary
from services.runtime.wire import checked_id, order_key

log = logging.getLogger(__name__)


class AggregatorServicer(aggregator_pb2_grpc.AggregatorServiceServicer):
    def __init__(self, ledger: Ledger, hub: Hub, replay_page: int, notifications: Notifications) -> None:
        self._ledger = ledger
        self._notifications = notifications
        self._hub = hub
        self._replay_page = replay_page

    @unary
    async def CreateOrder(
        self, request: aggregator_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.CreateOrderResponse:
        result = await self._ledger.create_order(request.signal, request.submission_id[:64])
        return aggregator_pb2.CreateOrderResponse(
            created=result.created, order=result.order, update=result.update
        )

    @unary
    async def RecordUpdate(
        self, request: aggregator_pb2.RecordUpdateRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.RecordUpdateResponse:
        result = await self._ledger.record(request.update)
        return aggregator_pb2.RecordUpdateResponse(update=result.update, duplicate=result.duplicate)

    async def RecordUpdates(
        self,
        requests: AsyncIterator[aggregator_pb2.RecordUpdatesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[aggregator_pb2.RecordUpdatesResponse]:
        # Not wrapped in `stream`: nothing here ends the stream but the caller; each request's
        # refusal (or bug) is its own answer.
        async for response in record_each(self._ledger, requests):
            yield response

    @stream
    async def WatchUpdates(
        self, request: aggregator_pb2.WatchUpdatesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[aggregator_pb2.WatchUpdatesResponse]:
        # Checked as every other query's ids are: a watch for an id that can never exist would
        # otherwise hold its stream open for nothing.
        user_id = checked_id(request.user_id, "user_id")
        signal_id = checked_id(request.signal_id, "signal_id") if request.signal_id else None
        updates = watch(self._ledger, self._hub, user_id, request.after_sequence, signal_id, self._replay_page)
        async for update in updates:
            yield aggregator_pb2.WatchUpdatesResponse(update=update)

    @unary
    async def GetOrder(
        self, request: aggregator_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.GetOrderResponse:
        # An id that can never exist is INVALID_ARGUMENT, as in ListFills (and is not quoted back whole).
        order = await self._ledger.get_order(*order_key(request.user_id, request.signal_id))
        return aggregator_pb2.GetOrderResponse(order=order)

    @unary
    async def ListOrders(
        self, request: aggregator_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.ListOrdersResponse:
        orders, next_page_token = await self._ledger.list_orders(
            request.user_id,
            request.statuses,
            request.pair,
            request.broker,
            request.created_from if request.HasField("created_from") else None,
            request.created_before if request.HasField("created_before") else None,
            request.page_size,
            request.page_token,
        )
        return aggregator_pb2.ListOrdersResponse(orders=orders, next_page_token=next_page_token)

    @unary
    async def ListFills(
        self, request: aggregator_pb2.ListFillsRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.ListFillsResponse:
        fills = await self._ledger.list_fills(request.user_id, request.signal_id)
        return aggregator_pb2.ListFillsResponse(fills=fills)

    @unary
    async def GetDailySummary(
        self, request: aggregator_pb2.GetDailySummaryRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.GetDailySummaryResponse:
        return await self._ledger.daily_summary(request.user_id, request.day)

    # -- webhooks ---------------------------------------------------------------------------

    @unary
    async def SetWebhook(
        self, request: aggregator_pb2.SetWebhookRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.SetWebhookResponse:
        webhook, secret, created = await self._notifications.set_webhook(
            request.user_id, request.url, request.events
        )
        return aggregator_pb2.SetWebhookResponse(webhook=webhook, secret=secret, created=created)

    @unary
    async def ListWebhooks(
        self, request: aggregator_pb2.ListWebhooksRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.ListWebhooksResponse:
        webhooks = await self._notifications.list_webhooks(request.user_id)
        return aggregator_pb2.ListWebhooksResponse(webhooks=webhooks)

    @unary
    async def DeleteWebhook(
        self, request: aggregator_pb2.DeleteWebhookRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.DeleteWebhookResponse:
        await self._notifications.delete_webhook(request.user_id, request.webhook_id)
        return aggregator_pb2.DeleteWebhookResponse()

    @unary
    async def ListDeliveries(
        self, request: aggregator_pb2.ListDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> aggregator_pb2.ListDeliveriesResponse:
        deliveries, next_page_token = await self._notifications.list_deliveries(
            request.user_id, request.webhook_id, request.page_size, request.page_token
        )
        return aggregator_pb2.ListDeliveriesResponse(deliveries=deliveries, next_page_token=next_page_token)


# -- RecordUpdates: many records in flight on one stream -----------------------------------------


async def record_each(
    ledger: Ledger, requests: AsyncIterator[aggregator_pb2.RecordUpdatesRequest]
) -> AsyncIterator[aggregator_pb2.RecordUpdatesResponse]:
    """Each request recorded as RecordUpdate records it, all of them at once (so group commit
    batches them), each answered with its request_id once durable or refused; ends when the
    requests have ended and every one of them is answered."""
    answers: asyncio.Queue[aggregator_pb2.RecordUpdatesResponse | None] = asyncio.Queue()
    unanswered = 0

    async def read() -> None:
        nonlocal unanswered
        try:
            async for request in requests:
                unanswered += 1
                try:
                    durable = ledger.enqueue_record(request.update)
                except Exception as exc:  # refused before it was queued (a malformed update)
                    answers.put_nowait(_refusal(request.request_id, exc))
                else:
                    durable.add_done_callback(functools.partial(_answer, answers, request.request_id))
        finally:
            answers.put_nowait(None)  # no more requests (or reading them failed)

    reader = asyncio.create_task(read(), name="record-updates-reader")
    try:
        requests_ended = False
        while not (requests_ended and unanswered == 0):
            answer = await answers.get()
            if answer is None:
                requests_ended = True
                continue
            unanswered -= 1
            yield answer
        await reader  # its failure (the caller's stream broke) is the call's
    finally:
        reader.cancel()


def _answer(
    answers: asyncio.Queue[aggregator_pb2.RecordUpdatesResponse | None],
    request_id: int,
    durable: asyncio.Future[Recorded],
) -> None:
    if durable.cancelled():
        answers.put_nowait(_refusal(request_id, asyncio.CancelledError()))
    elif durable.exception() is not None:
        answers.put_nowait(_refusal(request_id, durable.exception()))  # type: ignore[arg-type]
    else:
        result = durable.result()
        response = aggregator_pb2.RecordUpdatesResponse(request_id=request_id)
        response.recorded.update.CopyFrom(result.update)  # (built in place: one copy, not two)
        response.recorded.duplicate = result.duplicate
        answers.put_nowait(response)


def _refusal(request_id: int, exc: BaseException) -> aggregator_pb2.RecordUpdatesResponse:
    """What the unary call's status would have been: the ServiceError's code, reason and message;
    anything else is a bug, logged and answered INTERNAL."""
    if isinstance(exc, ServiceError):
        log.info("record refused", extra={"code": exc.code.name, "reason": exc.reason, "detail": exc.message})
        err = exc
    else:
        log.error("unexpected error recording an update", exc_info=exc)
        err = ServiceError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error")
    return aggregator_pb2.RecordUpdatesResponse(
        request_id=request_id,
        refusal=refusal_pb(err),
    )
