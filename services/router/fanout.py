"""One strategy signal, fanned out: a child signal per subscribed user, each its own order.

Each child is sized by its subscriber's allocation rule (services/domain/allocation.py) and then
goes the way every signal goes (RouterEngine.submit: that user's permission check and
reservation, routing, execution), in a task of its own, so one user's refusal, limit, kill switch
or exchange failure never touches another's. What differs from a user's own signal:

- The child's signal id is deterministic (`subscriber_signal_id`): the same strategy signal
  submitted again places nothing new; the children's stored updates are streamed instead.
- A child refused before it reaches the ledger (a permission denial, no API keys for any broker
  listing the pair, nothing routable) is still recorded, as an order REJECTED with the reason,
  so the user sees it in their own stream and the strategy in its summary.
- A subscriber the rule gives no order (pair filtered out, size under the minimum) is reported
  as skipped; nothing is written for them.

The caller sees every child's updates, merged as they come, then a summary.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
from nija.common.v1 import common_pb2
from nija.router.v1 import router_pb2

from services.aggregator.client import LedgerClient
from services.domain.allocation import size_for
from services.domain.ids import subscriber_signal_id
from services.domain.money import fmt
from services.domain.states import Status
from services.permission.client import PermissionClient
from services.router.engine import RouterEngine, status_update
from services.runtime.errors import ServiceError, invalid
from services.runtime.wire import STATUS_FROM_PB, checked_id, signal_from_pb

log = logging.getLogger(__name__)

#: The child's metadata key naming the strategy signal it came from.
STRATEGY_SIGNAL_KEY = "strategy_signal_id"

_Event = router_pb2.SubmitStrategySignalResponse


def template_signal(pb: router_pb2.StrategySignal) -> common_pb2.TradeSignal:
    """The strategy signal as a user's signal without its user: every field checked once, up
    front (INVALID_ARGUMENT naming the field), before any subscriber is looked at."""
    strategy_signal_id = checked_id(pb.strategy_signal_id, "strategy_signal_id")
    if not pb.strategy_id:
        raise invalid("BAD_STRATEGY_ID", "strategy_id is required", field="strategy_id")
    template = common_pb2.TradeSignal(
        signal_id=subscriber_signal_id(strategy_signal_id, "x"),
        user_id="x",
        pair=pb.pair,
        side=pb.side,
        size_usd=pb.size_usd,
        signal_type=pb.signal_type,
        strategy=pb.strategy_id,
        limit_price=pb.limit_price,
    )
    template.metadata.update(pb.metadata)
    template.metadata[STRATEGY_SIGNAL_KEY] = strategy_signal_id
    if pb.HasField("timestamp"):
        template.timestamp.CopyFrom(pb.timestamp)
    else:
        template.timestamp.GetCurrentTime()
    signal_from_pb(template)  # raises INVALID_ARGUMENT naming the broken field
    return template


class FanOut:
    def __init__(
        self, engine: RouterEngine, permission: PermissionClient, ledger: LedgerClient, concurrency: int = 64
    ) -> None:
        self._engine = engine
        self._permission = permission
        self._ledger = ledger
        #: Children started at once: a 10,000-subscriber strategy must not open 10,000 streams.
        self._slots = asyncio.Semaphore(concurrency)

    async def run(
        self, pb: router_pb2.StrategySignal, time_remaining: float | None = None
    ) -> AsyncIterator[_Event]:
        template = template_signal(pb)
        strategy_size = Decimal(pb.size_usd)
        subscriptions = await self._permission.subscriptions(pb.strategy_id, time_remaining)
        out: asyncio.Queue[_Event | None] = asyncio.Queue()
        finals: dict[str, Status] = {}
        skipped = 0
        children = []
        for sub in subscriptions:
            sizing = size_for(sub.allocation, strategy_size, pb.pair)
            if sizing.size_usd is None:
                skipped += 1
                out.put_nowait(_Event(skipped=router_pb2.SkippedSubscriber(user_id=sub.user_id, reason=sizing.skipped)))
                continue
            child = common_pb2.TradeSignal()
            child.CopyFrom(template)
            child.user_id = sub.user_id
            child.signal_id = subscriber_signal_id(template.metadata[STRATEGY_SIGNAL_KEY], sub.user_id)
            child.size_usd = fmt(sizing.size_usd)
            children.append(child)

        async def drive(child: common_pb2.TradeSignal) -> None:
            async with self._slots:
                try:
                    async for update in self._child(child, time_remaining):
                        status = STATUS_FROM_PB.get(update.status)
                        if status is not None and status.terminal:
                            finals[child.user_id] = status
                        out.put_nowait(_Event(update=update))
                except Exception as exc:  # this child only: the others go on
                    log.warning("a fan-out child could not be driven",
                                extra={"signal_id": child.signal_id, "user_id": child.user_id, "error": repr(exc)})

        tasks = [asyncio.create_task(drive(c), name=f"fanout-{c.signal_id}") for c in children]
        done = asyncio.gather(*tasks)
        done.add_done_callback(lambda _: out.put_nowait(None))
        try:
            while (event := await out.get()) is not None:
                yield event
        finally:
            if not done.done():  # the caller went away: the children still run to their end
                log.info("strategy caller left; its children go on", extra={"strategy_signal_id": pb.strategy_signal_id})
        outcomes = Counter(status.value for status in finals.values())
        yield _Event(summary=router_pb2.FanOutSummary(
            strategy_signal_id=pb.strategy_signal_id,
            subscribers=len(subscriptions),
            orders=len(children),
            skipped=skipped,
            outcomes=dict(outcomes),
        ))

    async def _child(
        self, child: common_pb2.TradeSignal, time_remaining: float | None
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        """One subscriber's order: its stored updates when it exists already, else submitted, and
        recorded as REJECTED when refused before it reached the ledger."""
        try:
            await self._ledger.get_order(child.user_id, child.signal_id, time_remaining)
        except ServiceError as exc:
            if exc.code is not grpc.StatusCode.NOT_FOUND:
                raise
        else:  # submitted before (a repeated strategy signal): what it became, placing nothing
            async for update in self._ledger.watch_signal(child.user_id, child.signal_id, 0, self._stream_timeout(time_remaining)):
                yield update
            return
        try:
            async for update in self._engine.submit(child, time_remaining):
                yield update
        except ServiceError as refused:
            async for update in self._record_refusal(child, refused, time_remaining):
                yield update

    async def _record_refusal(
        self, child: common_pb2.TradeSignal, refused: ServiceError, time_remaining: float | None
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        created = await self._ledger.create_order(child, time_remaining)
        if not created.created:  # a concurrent submission of the same signal got there first
            async for update in self._ledger.watch_signal(child.user_id, child.signal_id, 0, self._stream_timeout(time_remaining)):
                yield update
            return
        yield created.update
        signal = signal_from_pb(child)
        reason = f"{refused.reason}: {refused.message}" if refused.reason else refused.message
        yield await self._ledger.record(status_update(signal, Status.REJECTED, reason, "rejected"))

    def _stream_timeout(self, time_remaining: float | None) -> float:
        return time_remaining or self._engine.execute_timeout_s
