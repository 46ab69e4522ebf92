"""The router's decision path for one signal.

  1. validate the signal                         -> INVALID_ARGUMENT
  2. the pair must be listed by some executor   -> NOT_FOUND (UNKNOWN_PAIR)
  3. ask the permission service to check and reserve the trade's exposure, atomically
     (a quote only checks)                      -> NOT_FOUND user / FAILED_PRECONDITION disabled,
                                                   kill switch / PERMISSION_DENIED (pair, size,
                                                   brokers) / RESOURCE_EXHAUSTED (rate, limits)
  4. plan the route from pushed executor info (services.domain.routing; no RPC per signal)
                                                -> FAILED_PRECONDITION (NO_ELIGIBLE_BROKER)
  5. claim the signal in the ledger (PENDING); a signal_id seen before streams the first
     submission's updates from the ledger instead of placing anything
  6. ROUTING (persisted), then the executor's stream, relayed; an executor that refuses the
     order, or hands it back before sending anything to its exchange (NOT_SENT), is replaced by
     the next route (ROUTING again, up to `max_attempts`); once anything was sent, never
  6'. a split plan: one child signal per venue, each its own ledger order and executor stream,
     relayed as they come, with the parent's aggregate recorded alongside
Nothing is written to the ledger before step 5, and a signal refused after step 3 gives its
reservation back, so a refused signal leaves no trace. Every update reaches the caller only after
the aggregator persisted it; the aggregator hands fills and final states on to the permission
service, which turns reservations into positions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import grpc
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2
from nija.permission.v1 import permission_pb2

from services.aggregator.client import LedgerClient
from services.domain.ids import child_signal_id
from services.domain.money import ZERO, fmt
from services.domain.performance import PairPerformance
from services.domain.routing import (
    BalancingConfig,
    Policy,
    RoutePlan,
    RoutingChoices,
    leg_route,
    plan_route,
)
from services.domain.scoring import Route
from services.domain.signal import PARENT_KEY, Signal
from services.domain.states import Status
from services.permission.client import PermissionClient
from services.router.directory import ExecutorDirectory
from services.router.slots import UserSlots
from services.runtime import metrics, tracing
from services.runtime.channels import bounded, raise_if_cancelled
from services.runtime.errors import (
    ServiceError,
    invalid,
    not_found,
    precondition,
    reason_of,
    relay,
)
from services.runtime.wire import (
    METHOD_TO_PB,
    SIDE_TO_PB,
    STATUS_FROM_PB,
    STATUS_TO_PB,
    now_pb,
    signal_from_pb,
)

log = logging.getLogger(__name__)

# An executor answering one of these before it sent any update did not take the order.
_REFUSED_BEFORE_ADMISSION = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
)

_DENIAL_STATUS = {
    permission_pb2.DENIAL_CODE_USER_DISABLED: (grpc.StatusCode.FAILED_PRECONDITION, "USER_DISABLED"),
    permission_pb2.DENIAL_CODE_PAIR_NOT_ALLOWED: (grpc.StatusCode.PERMISSION_DENIED, "PAIR_NOT_ALLOWED"),
    permission_pb2.DENIAL_CODE_SIZE_ABOVE_MAX: (grpc.StatusCode.PERMISSION_DENIED, "SIZE_ABOVE_MAX"),
    permission_pb2.DENIAL_CODE_NO_ALLOWED_BROKER: (grpc.StatusCode.PERMISSION_DENIED, "NO_ALLOWED_BROKER"),
    permission_pb2.DENIAL_CODE_KILL_SWITCH: (grpc.StatusCode.FAILED_PRECONDITION, "KILL_SWITCH"),
    permission_pb2.DENIAL_CODE_RATE_LIMITED: (grpc.StatusCode.RESOURCE_EXHAUSTED, "USER_RATE_LIMITED"),
    permission_pb2.DENIAL_CODE_POSITION_LIMIT: (grpc.StatusCode.RESOURCE_EXHAUSTED, "POSITION_LIMIT"),
    permission_pb2.DENIAL_CODE_OPEN_POSITIONS_LIMIT: (grpc.StatusCode.RESOURCE_EXHAUSTED, "OPEN_POSITIONS_LIMIT"),
    permission_pb2.DENIAL_CODE_DAILY_NOTIONAL_LIMIT: (grpc.StatusCode.RESOURCE_EXHAUSTED, "DAILY_NOTIONAL_LIMIT"),
    permission_pb2.DENIAL_CODE_DAILY_LOSS_LIMIT: (grpc.StatusCode.RESOURCE_EXHAUSTED, "DAILY_LOSS_LIMIT"),
}

POLICY_FROM_PB = {
    common_pb2.ROUTING_POLICY_SCORE: Policy.SCORE,
    common_pb2.ROUTING_POLICY_COST: Policy.COST,
}
POLICY_TO_PB = {v: k for k, v in POLICY_FROM_PB.items()}
MAX_SLIPPAGE_BPS = 10_000


@dataclasses.dataclass(frozen=True)
class RoutingConfig:
    # Longest an order's stream may run when the caller set no deadline (limit orders, TWAP).
    execute_timeout_s: float = 600.0
    # Routes tried for one signal when executors refuse it before taking it.
    max_attempts: int = 3
    # An executor whose stream ended before anything was recorded for the order is given this
    # long to show it admitted the order (a restart recovers it from the journal) before the
    # order goes to the next route.
    admission_wait_s: float = 10.0
    # Signals of one user decided at once (permission check, reservation); the rest wait their
    # turn, so one user's flood cannot crowd out everyone else's decisions (slots.UserSlots).
    decisions_per_user: int = 8
    # A signal refused for its user's rate limit keeps its decision slot this long before the
    # refusal is sent: a client flooding at full speed is slowed to its own slots' pace instead
    # of spending everyone's CPU on refusals (the answer is the same, only later).
    rate_limited_hold_s: float = 0.25
    balancing: BalancingConfig = BalancingConfig()


@dataclasses.dataclass
class Prepared:
    """A validated, permitted signal and its route plan."""

    signal: Signal
    pb: common_pb2.TradeSignal
    choices: RoutingChoices
    plan: RoutePlan
    #: A reservation this call made (not a replay of an earlier submission's).
    reserved: bool = False
    #: Every allowed broker listing the pair trades live and the user has no keys there.
    missing_keys: tuple[str, ...] = ()


class RouterEngine:
    def __init__(
        self,
        permission: PermissionClient,
        ledger: LedgerClient,
        directory: ExecutorDirectory,
        config: RoutingConfig,
        performance: PairPerformance | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._permission = permission
        self._ledger = ledger
        self._directory = directory
        self._config = config
        self.performance = performance or PairPerformance()
        self._rng = rng or random.Random()
        self._deciding = UserSlots(config.decisions_per_user)
        # Orders being begun or driven to their end, whether or not their caller is still listening.
        self._driving: set[asyncio.Task[Any]] = set()

    # ---- decide --------------------------------------------------------------------------------

    async def prepare(
        self, pb_signal: common_pb2.TradeSignal, time_remaining: float | None, reserve: bool = False
    ) -> Prepared:
        """Steps 1-4: everything short of writing to the ledger or sending anything. With
        `reserve`, the permission service also reserves the trade's exposure."""
        signal = signal_from_pb(pb_signal)
        options = _routing_options(pb_signal.routing)
        snapshots = self._directory.snapshots()
        if not snapshots:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "NO_EXECUTORS", "no executor has reported yet")
        if not any(signal.pair in snap.pairs for snap in snapshots.values()):
            raise not_found("UNKNOWN_PAIR", f"{signal.pair} is not listed on any broker", pair=signal.pair)

        if reserve:
            decision = await self._permission.reserve(signal, time_remaining)
            reserved = decision.allowed and not decision.replayed
        else:
            decision = await self._permission.check(signal, time_remaining)
            reserved = False
        if not decision.allowed:
            code, reason = _DENIAL_STATUS.get(decision.denial_code, (grpc.StatusCode.PERMISSION_DENIED, "DENIED"))
            if reserve:
                metrics.RESERVATION_DENIALS.labels(reason).inc()
            raise ServiceError(code, reason, decision.reason)
        prefs = decision.preferences
        choices = RoutingChoices(
            policy=options.policy or POLICY_FROM_PB.get(prefs.routing_policy, Policy.SCORE),
            allow_split=options.allow_split,
            include_withdrawal=options.include_withdrawal,
            max_slippage_bps=options.max_slippage_bps or prefs.max_slippage_bps,
            preferred=tuple(prefs.preferred_brokers),
        )
        # A live venue signs with the user's own keys: a user without keys there cannot go there.
        key_brokers = set(decision.api_key_brokers)
        keyless = {b for b in decision.allowed_brokers if (snap := snapshots.get(b)) and snap.requires_api_keys
                   and b not in key_brokers}
        allowed = [b for b in decision.allowed_brokers if b not in keyless]
        plan = plan_route(
            signal, allowed, snapshots, self.performance.success_rate,
            choices, self._config.balancing, self._rng,
        )
        lists_pair = [b for b in decision.allowed_brokers if b in snapshots and signal.pair in snapshots[b].pairs]
        missing_keys = tuple(sorted(lists_pair)) if lists_pair and all(b in keyless for b in lists_pair) else ()
        return Prepared(signal, pb_signal, choices, plan, reserved, missing_keys)

    # ---- submit --------------------------------------------------------------------------------

    async def submit(
        self, pb_signal: common_pb2.TradeSignal, time_remaining: float | None = None, after_sequence: int = 0
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        """The signal's updates as persisted. A signal submitted before is not placed again: its
        stored updates after `after_sequence` are streamed (a client re-attaching)."""
        started = time.perf_counter()
        # Waiting for the user's slot can be given up: nothing is done yet. What follows is
        # finished even if the caller goes away meanwhile, or it could leave a reservation with no
        # order, or an order created that nobody drives; a caller that comes back re-attaches.
        release = await self._deciding.acquire(pb_signal.user_id)
        begin = asyncio.create_task(
            self._begin(pb_signal, time_remaining, release, started), name=f"begin-{pb_signal.signal_id}"
        )
        self._track(begin)
        updates = await asyncio.shield(begin)
        if updates is None:  # submitted before: stream what is stored
            stream_timeout = time_remaining or self._config.execute_timeout_s
            user_id, signal_id = pb_signal.user_id, pb_signal.signal_id
            async for update in self._ledger.watch_signal(user_id, signal_id, after_sequence, stream_timeout):
                yield update
            return
        while (item := await updates.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def _begin(
        self, pb_signal: common_pb2.TradeSignal, time_remaining: float | None, release: Callable[[], None],
        started: float,
    ) -> asyncio.Queue[common_pb2.ExecutionUpdate | BaseException | None] | None:
        """Decide (holding the user's slot), create the order in the ledger and hand it to a task
        of its own that drives it to its end. Returns the queue of its updates, the first (PENDING)
        already in it; None when the signal was submitted before."""
        try:
            with tracing.span("router.decide", signal_id=pb_signal.signal_id, user_id=pb_signal.user_id,
                              pair=pb_signal.pair):
                try:
                    prepared = await self.prepare(pb_signal, time_remaining, reserve=True)
                except ServiceError as err:
                    if err.reason == "USER_RATE_LIMITED":
                        await self._hold_refusal(time_remaining)
                    raise
                tracing.annotate(broker=prepared.plan.routes[0].broker if prepared.plan.routes else "")
        finally:
            release()
        metrics.ROUTING_LATENCY.observe(time.perf_counter() - started)
        signal, plan = prepared.signal, prepared.plan
        try:
            if prepared.missing_keys:
                raise precondition(
                    "NO_API_KEYS",
                    f"no API keys stored for any broker listing {signal.pair} ({', '.join(prepared.missing_keys)})",
                )
            if not plan.routable:
                raise precondition("NO_ELIGIBLE_BROKER", f"no broker can take {signal.pair} now ({plan.why_not()})")
            created = await self._ledger.create_order(pb_signal, time_remaining)
        except ServiceError:
            if prepared.reserved:
                await self._give_back(signal)
            raise
        if not created.created:
            log.info("signal resubmitted: streaming the first submission", extra={"signal_id": signal.signal_id})
            if prepared.reserved:  # reserved afresh (the first one's had ended): nothing new will trade
                await self._give_back(signal)
            return None
        # Streams (the executor's, the ledger's) last as long as the caller allows, or a bound.
        stream_timeout = time_remaining or self._config.execute_timeout_s
        updates: asyncio.Queue[common_pb2.ExecutionUpdate | BaseException | None] = asyncio.Queue()
        updates.put_nowait(created.update)
        self._track(asyncio.create_task(self._drive(prepared, stream_timeout, updates), name=f"drive-{signal.signal_id}"))
        return updates

    def _track(self, task: asyncio.Task[Any]) -> None:
        """Kept until done (stop() cancels what is left); a failure nobody awaited is still seen."""
        self._driving.add(task)
        task.add_done_callback(self._driving.discard)
        task.add_done_callback(_retrieve)

    async def _hold_refusal(self, time_remaining: float | None) -> None:
        """The user's slot stays taken a while before their rate-limit refusal goes out (within
        what the caller's deadline leaves, so they still get the refusal, not a timeout)."""
        hold = self._config.rate_limited_hold_s
        if time_remaining is not None:
            hold = min(hold, time_remaining / 2)
        if hold > 0:
            await asyncio.sleep(hold)

    async def _drive(
        self,
        prepared: Prepared,
        stream_timeout: float,
        out: asyncio.Queue[common_pb2.ExecutionUpdate | BaseException | None],
    ) -> None:
        signal, plan = prepared.signal, prepared.plan
        try:
            if plan.split is not None:
                source = self._run_split(prepared, stream_timeout)
            else:
                source = self._run_routes(signal, prepared.pb, plan.routes, stream_timeout)
            async for update in source:
                out.put_nowait(update)
        except Exception as exc:  # handed to the caller, if still there
            log.warning("order could not be driven to its end", extra={"signal_id": signal.signal_id, "error": repr(exc)})
            out.put_nowait(exc)
        finally:
            out.put_nowait(None)

    async def stop(self) -> None:
        """Shutting down: orders still being driven are left to their executors and the ledger."""
        for task in list(self._driving):
            task.cancel()
        await asyncio.gather(*self._driving, return_exceptions=True)

    async def _give_back(self, signal: Signal) -> None:
        """The signal was refused after its exposure was reserved: release the reservation."""
        try:
            await self._permission.release(signal.user_id, signal.signal_id)
        except ServiceError as exc:
            # Not fatal for the caller; the reservation stays counted until an operator or the
            # ledger's final state releases it.
            log.warning("could not release a reservation",
                        extra={"signal_id": signal.signal_id, "reason": exc.reason})

    async def _run_routes(
        self,
        signal: Signal,
        pb_signal: common_pb2.TradeSignal,
        routes: list[Route],
        stream_timeout: float,
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        refusals: list[str] = []
        for route in routes[: self._config.max_attempts]:
            route_msg = route_pb(route)
            routing = await self._ledger.record(self._routing_update(signal, route.broker, route_msg))
            metrics.TRADES_ROUTED.labels(route.broker, signal.pair).inc()
            yield routing
            outcome = None
            last_sequence = routing.sequence
            try:
                async for update in self._execute(pb_signal, route_msg, stream_timeout):
                    last_sequence = update.sequence
                    yield update
                    status = STATUS_FROM_PB.get(update.status)
                    if status is not None and status.terminal:
                        outcome = status
                if outcome is not None:
                    self.performance.record(route.broker, signal.pair, outcome is Status.FILLED)
                    return
            except grpc.aio.AioRpcError as exc:
                raise_if_cancelled()
                if reason_of(exc) == "KILL_SWITCH" and last_sequence == routing.sequence:
                    # Switched on after the permission check: no other broker may take it either.
                    yield await self._ledger.record(status_update(signal, Status.REJECTED, exc.details() or "", "killed"))
                    return
                handed_back = reason_of(exc) == "NOT_SENT"
                if handed_back or (last_sequence == routing.sequence and exc.code() in _REFUSED_BEFORE_ADMISSION):
                    refusals.append(f"{route.broker}: {exc.details()} ({reason_of(exc) or exc.code().name})")
                    metrics.FAILOVERS.labels(route.broker).inc()
                    log.warning("executor refused, trying the next broker",
                                extra={"broker": route.broker, "code": exc.code().name})
                    continue
                log.warning("executor stream broke; following the ledger",
                            extra={"broker": route.broker, "code": exc.code().name})
            # The executor's stream ended early. An order it admitted goes on without us (its
            # QUEUED is in the ledger, or comes from its journal when it is back), so the rest of
            # its updates come from the ledger. One it never admitted is still ours to route.
            if last_sequence == routing.sequence and not await self._admitted(signal, routing.sequence):
                refusals.append(f"{route.broker}: its stream ended before it admitted the order")
                metrics.FAILOVERS.labels(route.broker).inc()
                log.warning("executor never admitted the order, trying the next broker", extra={"broker": route.broker})
                continue
            async for update in self._ledger.watch_signal(signal.user_id, signal.signal_id, last_sequence, stream_timeout):
                yield update
            return
        yield await self._ledger.record(
            status_update(signal, Status.FAILED, f"no executor accepted the order: {'; '.join(refusals)}", "failed")
        )

    async def _admitted(self, signal: Signal, routing_sequence: int) -> bool:
        """Whether an executor took the order after its ROUTING update: anything recorded since
        (its QUEUED, or an executor's restart recovering it from its journal) within
        `admission_wait_s`. An executor that recovers the order later finds it routed elsewhere
        and drops it (ExecutorEngine.recover), so moving on cannot place it twice."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._config.admission_wait_s
        while True:
            order = await self._ledger.get_order(signal.user_id, signal.signal_id)
            if order.last_sequence > routing_sequence:
                return True
            if loop.time() >= give_up_at:
                return False
            await asyncio.sleep(0.25)

    async def _execute(
        self, pb_signal: common_pb2.TradeSignal, route: common_pb2.RouteDecision, timeout_s: float
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        call = self._directory.stub(route.broker).Execute(
            executor_pb2.ExecuteRequest(signal=pb_signal, route=route), timeout=timeout_s
        )
        async for response in call:
            yield response.update

    # ---- cancel --------------------------------------------------------------------------------

    async def cancel(self, user_id: str, signal_id: str, reason: str, time_remaining: float | None) -> list[str]:
        """Ask the executors holding the signal's open order (or a split's children) to cancel it."""
        order = await self._ledger.get_order(user_id, signal_id, time_remaining)
        if STATUS_FROM_PB[order.status].terminal:
            raise precondition("ORDER_FINISHED", f"{signal_id} is already {STATUS_FROM_PB[order.status].value}")
        if order.broker == "split":
            targets = [(b, child_signal_id(signal_id, b)) for b in self._directory.brokers]
        elif order.broker:
            targets = [(order.broker, signal_id)]
        else:
            raise precondition("NOT_ROUTED_YET", f"{signal_id} has not reached an executor yet")
        accepted = []
        for broker, target_signal in targets:
            try:
                await self._directory.stub(broker).CancelOrder(
                    executor_pb2.CancelOrderRequest(user_id=user_id, signal_id=target_signal, reason=reason),
                    timeout=bounded(5.0, time_remaining),
                )
                accepted.append(broker)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise relay(exc) from None
        if not accepted:
            raise not_found("NO_OPEN_ORDER", f"no executor holds an open order for {signal_id}")
        return accepted

    # ---- split ---------------------------------------------------------------------------------

    async def _run_split(self, prepared: Prepared, stream_timeout: float) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        signal, split = prepared.signal, prepared.plan.split
        assert split is not None
        legs = []
        for broker, usd in sorted(split.legs.items()):
            legs.append((broker, usd, child_signal_id(signal.signal_id, broker)))
        cheapest_single = min((q.cost.total_usd for q in prepared.plan.quotes if q.eligible and q.cost), default=None)
        parent_route = common_pb2.RouteDecision(
            broker="split",
            execution_method=METHOD_TO_PB[prepared.plan.routes[0].method] if prepared.plan.routes else 0,
            priority=prepared.plan.routes[0].priority if prepared.plan.routes else 0,
            estimated_fees=fmt(sum((c.fee_usd for c in split.costs.values()), ZERO)),
            estimated_cost=fmt(split.total_cost_usd),
            policy=POLICY_TO_PB[prepared.choices.policy],
            legs=[common_pb2.SplitLeg(broker=b, size_usd=fmt(u), child_signal_id=c) for b, u, c in legs],
            reason=(
                f"split across {', '.join(b for b, _, _ in legs)}: all-in ${split.total_cost_usd:.2f}"
                + (f" vs ${cheapest_single:.2f} on the cheapest single venue" if cheapest_single is not None
                   else " (no single venue can take it)")
            ),
            attempt=1,
        )
        yield await self._ledger.record(self._routing_update(signal, "split", parent_route))

        merged: asyncio.Queue[common_pb2.ExecutionUpdate | None] = asyncio.Queue()

        async def run_leg(broker: str, usd: Decimal, child_id: str) -> None:
            try:
                async for update in self._run_child(prepared, broker, usd, child_id, stream_timeout):
                    await merged.put(update)
            finally:
                await merged.put(None)

        tasks = [asyncio.create_task(run_leg(*leg)) for leg in legs]
        parent = _ParentProgress(signal, len(legs))
        try:
            running = len(tasks)
            while running:
                update = await merged.get()
                if update is None:
                    running -= 1
                    continue
                yield update
                for status, reason in parent.absorb(update):
                    yield await self._ledger.record(self._aggregate_update(signal, parent, status, reason))
            if not parent.terminal:
                status, reason = parent.finish()
                yield await self._ledger.record(self._aggregate_update(signal, parent, status, reason))
        finally:
            for task in tasks:
                task.cancel()

    async def _run_child(
        self, prepared: Prepared, broker: str, usd: Decimal, child_id: str, stream_timeout: float
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        signal = prepared.signal
        child_pb = common_pb2.TradeSignal()
        child_pb.CopyFrom(prepared.pb)
        child_pb.signal_id = child_id
        child_pb.size_usd = fmt(usd)
        child_pb.ClearField("routing")
        child_pb.metadata[PARENT_KEY] = signal.signal_id
        child = dataclasses.replace(signal, signal_id=child_id, size_usd=usd)
        created = await self._ledger.create_order(child_pb, stream_timeout)
        if not created.created:
            async for update in self._ledger.watch_signal(child.user_id, child_id, 0, stream_timeout):
                yield update
            return
        yield created.update
        cost = prepared.plan.split.costs[broker]  # type: ignore[union-attr]
        route = leg_route(child, broker, usd, cost, prepared.choices.policy)
        async for update in self._run_routes(child, child_pb, [route], stream_timeout):
            yield update

    def _aggregate_update(
        self, signal: Signal, parent: "_ParentProgress", status: Status, reason: str
    ) -> common_pb2.ExecutionUpdate:
        parent.events += 1
        update = status_update(signal, status, reason, f"split:{parent.events}")
        update.broker = "split"
        update.filled_quantity = fmt(parent.quantity)
        update.filled_notional = fmt(parent.notional)
        update.fees_total = fmt(parent.fees)
        update.average_price = fmt((parent.notional / parent.quantity).quantize(Decimal("1e-12"))) if parent.quantity else "0"
        return update

    # ---- updates -------------------------------------------------------------------------------

    def _routing_update(
        self, signal: Signal, broker: str, route: common_pb2.RouteDecision
    ) -> common_pb2.ExecutionUpdate:
        update = status_update(signal, Status.ROUTING, route.reason, f"routing:{route.attempt}")
        update.broker = broker
        update.route.CopyFrom(route)
        return update

    @property
    def execute_timeout_s(self) -> float:
        """How long an order's stream may run when the caller set no deadline."""
        return self._config.execute_timeout_s


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A task's failure is its caller's to see; when the caller went away, nobody else's."""
    if not task.cancelled():
        task.exception()


def status_update(signal: Signal, status: Status, reason: str, suffix: str) -> common_pb2.ExecutionUpdate:
    """An update the router itself records for `signal` (its update_id ends in `suffix`)."""
    return common_pb2.ExecutionUpdate(
        signal_id=signal.signal_id,
        user_id=signal.user_id,
        status=STATUS_TO_PB[status],
        pair=signal.pair,
        side=SIDE_TO_PB[signal.side],
        reason=reason,
        time=now_pb(),
        update_id=f"{signal.signal_id}:{suffix}",
        parent_signal_id=signal.metadata.get(PARENT_KEY, ""),
    )


class _ParentProgress:
    """A split order's aggregate: the children's figures summed, and the parent's status."""

    _ORDER = [Status.ROUTING, Status.QUEUED, Status.EXECUTING, Status.PARTIAL_FILL]

    def __init__(self, signal: Signal, children: int) -> None:
        self.signal = signal
        self.children = children
        self.status = Status.ROUTING
        self.latest: dict[str, common_pb2.ExecutionUpdate] = {}
        self.events = 0
        self.terminal = False

    @property
    def quantity(self) -> Decimal:
        return sum((Decimal(u.filled_quantity or "0") for u in self.latest.values()), ZERO)

    @property
    def notional(self) -> Decimal:
        return sum((Decimal(u.filled_notional or "0") for u in self.latest.values()), ZERO)

    @property
    def fees(self) -> Decimal:
        return sum((Decimal(u.fees_total or "0") for u in self.latest.values()), ZERO)

    def absorb(self, child: common_pb2.ExecutionUpdate) -> list[tuple[Status, str]]:
        """The parent updates this child update calls for. Every child passes QUEUED and
        EXECUTING before its first fill, so the parent moves through them in order too."""
        self.latest[child.signal_id] = child
        status = STATUS_FROM_PB[child.status]
        out: list[tuple[Status, str]] = []
        if child.fills:
            self.status = Status.PARTIAL_FILL
            out.append((Status.PARTIAL_FILL, f"{child.signal_id}: {status.value}"))
        elif status in self._ORDER and self._ORDER.index(status) > self._ORDER.index(self.status):
            self.status = status
            out.append((status, f"{child.signal_id}: {status.value}"))
        if sum(STATUS_FROM_PB[u.status].terminal for u in self.latest.values()) == self.children:
            out.append(self.finish())
        return out

    def finish(self) -> tuple[Status, str]:
        self.terminal = True
        statuses = [STATUS_FROM_PB[u.status] for u in self.latest.values()]
        if len(statuses) == self.children and all(s is Status.FILLED for s in statuses):
            return Status.FILLED, f"all {self.children} legs filled"
        summary = ", ".join(f"{u.signal_id}: {STATUS_FROM_PB[u.status].value}" for u in self.latest.values())
        if self.quantity > 0:
            return Status.CANCELLED, f"split partly filled ({summary})"
        if statuses and all(s is Status.REJECTED for s in statuses) and self.status is not Status.PARTIAL_FILL:
            return Status.REJECTED, f"every leg rejected ({summary})"
        return Status.FAILED, f"no leg filled ({summary})"


@dataclasses.dataclass(frozen=True)
class _Options:
    policy: Policy | None
    allow_split: bool
    include_withdrawal: bool
    max_slippage_bps: int


def _routing_options(pb: common_pb2.RoutingOptions) -> _Options:
    if pb.policy not in (common_pb2.ROUTING_POLICY_UNSPECIFIED, *POLICY_FROM_PB):
        raise invalid("BAD_ROUTING_POLICY", "routing.policy must be SCORE or COST", field="routing.policy")
    if pb.max_slippage_bps > MAX_SLIPPAGE_BPS:
        raise invalid("BAD_MAX_SLIPPAGE_BPS", f"routing.max_slippage_bps must be at most {MAX_SLIPPAGE_BPS}",
                      field="routing.max_slippage_bps")
    return _Options(POLICY_FROM_PB.get(pb.policy), pb.allow_split, pb.include_withdrawal, pb.max_slippage_bps)


def route_pb(route: Route) -> common_pb2.RouteDecision:
    return common_pb2.RouteDecision(
        broker=route.broker,
        execution_method=METHOD_TO_PB[route.method],
        priority=route.priority,
        estimated_fees=fmt(route.estimated_fees),
        estimated_latency_ms=route.estimated_latency_ms,
        score=route.score,
        reason=route.reason,
        policy=POLICY_TO_PB[Policy(route.policy)],
        estimated_cost=fmt(route.estimated_cost) if route.estimated_cost is not None else "",
        attempt=route.attempt,
    )
