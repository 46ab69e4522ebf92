"""The router's decision path for one signal.

  1. validate the signal                         -> INVALID_ARGUMENT
  2. the pair must be listed by some executor   -> NOT_FOUND (UNKNOWN_PAIR)
  3. ask the permission service                 -> NOT_FOUND user / FAILED_PRECONDITION disabled /
                                                   PERMISSION_DENIED (pair, size, brokers)
  4. score the user's brokers from cached executor info (no RPC per signal)
                                                -> FAILED_PRECONDITION (NO_ELIGIBLE_BROKER)
  5. claim the signal in the ledger (PENDING); a signal_id seen before streams the first
     submission's updates from the ledger instead of placing anything
  6. ROUTING (persisted), then the best executor's stream, relayed; if an executor refuses
     before taking the order, the next-best broker is tried (ROUTING again)
Nothing is written before step 5, so a refused signal leaves no trace. Every update reaches the
caller only after the aggregator persisted it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

import grpc
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2
from nija.permission.v1 import permission_pb2

from services.aggregator.client import LedgerClient
from services.domain.money import fmt
from services.domain.performance import PairPerformance
from services.domain.scoring import Route, rank_brokers, route_for
from services.domain.signal import Signal
from services.domain.states import Status
from services.router.directory import ExecutorDirectory
from services.router.upstreams import PermissionClient
from services.runtime.errors import ServiceError, not_found, precondition, reason_of
from services.runtime.wire import METHOD_TO_PB, SIDE_TO_PB, STATUS_FROM_PB, STATUS_TO_PB, now_pb, signal_from_pb

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
}


@dataclasses.dataclass(frozen=True)
class RoutingConfig:
    # Longest an order's stream may run when the caller set no deadline (limit orders, TWAP).
    execute_timeout_s: float = 600.0


class RouterEngine:
    def __init__(
        self,
        permission: PermissionClient,
        ledger: LedgerClient,
        directory: ExecutorDirectory,
        config: RoutingConfig,
        performance: PairPerformance | None = None,
    ) -> None:
        self._permission = permission
        self._ledger = ledger
        self._directory = directory
        self._config = config
        self.performance = performance or PairPerformance()

    async def submit(
        self, pb_signal: common_pb2.TradeSignal, time_remaining: float | None = None
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        signal = signal_from_pb(pb_signal)
        snapshots = self._directory.snapshots()
        if not snapshots:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "NO_EXECUTORS", "no executor has reported yet")
        if not any(signal.pair in snap.pairs for snap in snapshots.values()):
            raise not_found("UNKNOWN_PAIR", f"{signal.pair} is not listed on any broker", pair=signal.pair)

        decision = await self._permission.check(signal, time_remaining)
        if not decision.allowed:
            code, reason = _DENIAL_STATUS.get(
                decision.denial_code, (grpc.StatusCode.PERMISSION_DENIED, "DENIED")
            )
            raise ServiceError(code, reason, decision.reason)

        ranked, excluded = rank_brokers(
            signal, decision.allowed_brokers, snapshots, self.performance.success_rate
        )
        if not ranked:
            why = "; ".join(f"{e.broker}: {e.reason}" for e in excluded) or "no brokers allowed"
            raise precondition("NO_ELIGIBLE_BROKER", f"no broker can take {signal.pair} now ({why})")

        # Streams (the executor's, the ledger's) last as long as the caller allows, or a bound.
        stream_timeout = time_remaining or self._config.execute_timeout_s
        created = await self._ledger.create_order(pb_signal, time_remaining)
        if not created.created:
            log.info("signal resubmitted: streaming the first submission", extra={"signal_id": signal.signal_id})
            async for update in self._ledger.watch_signal(signal.user_id, signal.signal_id, 0, stream_timeout):
                yield update
            return
        yield created.update

        refusals: list[str] = []
        for attempt, score in enumerate(ranked, start=1):
            route = route_for(signal, score)
            routing = await self._ledger.record(self._routing_update(signal, route, attempt))
            yield routing
            outcome = None
            last_sequence = routing.sequence
            try:
                async for update in self._execute(pb_signal, route, stream_timeout):
                    last_sequence = update.sequence
                    yield update
                    status = STATUS_FROM_PB.get(update.status)
                    if status is not None and status.terminal:
                        outcome = status
                if outcome is not None:
                    self.performance.record(route.broker, signal.pair, outcome is Status.FILLED)
                    return
            except grpc.aio.AioRpcError as exc:
                if last_sequence == routing.sequence and exc.code() in _REFUSED_BEFORE_ADMISSION:
                    refusals.append(f"{route.broker}: {exc.details()} ({reason_of(exc) or exc.code().name})")
                    log.warning("executor refused, trying the next broker", extra={"broker": route.broker, "code": exc.code().name})
                    continue
                log.warning("executor stream broke; following the ledger", extra={"broker": route.broker, "code": exc.code().name})
            # The executor took the order but its stream ended early: the order goes on without
            # us, so the rest of its updates come from the ledger.
            async for update in self._ledger.watch_signal(
                signal.user_id, signal.signal_id, last_sequence, stream_timeout
            ):
                yield update
            return

        failed = await self._ledger.record(
            self._update(signal, Status.FAILED, f"no executor accepted the order: {'; '.join(refusals)}", "failed:1")
        )
        yield failed

    async def _execute(
        self, pb_signal: common_pb2.TradeSignal, route: Route, timeout_s: float
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        call = self._directory.stub(route.broker).Execute(
            executor_pb2.ExecuteRequest(signal=pb_signal, route=route_pb(route)), timeout=timeout_s
        )
        async for response in call:
            yield response.update

    def _routing_update(self, signal: Signal, route: Route, attempt: int) -> common_pb2.ExecutionUpdate:
        update = self._update(signal, Status.ROUTING, route.reason, f"routing:{attempt}")
        update.broker = route.broker
        update.route.CopyFrom(route_pb(route))
        return update

    @staticmethod
    def _update(signal: Signal, status: Status, reason: str, suffix: str) -> common_pb2.ExecutionUpdate:
        return common_pb2.ExecutionUpdate(
            signal_id=signal.signal_id,
            user_id=signal.user_id,
            status=STATUS_TO_PB[status],
            pair=signal.pair,
            side=SIDE_TO_PB[signal.side],
            reason=reason,
            time=now_pb(),
            update_id=f"{signal.signal_id}:{suffix}",
        )


def route_pb(route: Route) -> common_pb2.RouteDecision:
    return common_pb2.RouteDecision(
        broker=route.broker,
        execution_method=METHOD_TO_PB[route.method],
        priority=route.priority,
        estimated_fees=fmt(route.estimated_fees),
        estimated_latency_ms=route.estimated_latency_ms,
        score=route.score,
        reason=route.reason,
    )
