"""The view model of `nija status`, from two scrapes and the time between them. Pure: no I/O,
no clock (the scrapes carry their times).

Counters become rates over the window between the scrapes (a counter that went down was reset by
a restart and counts from zero); gauges (queue depth, breaker state) are read from the later one.
Router counters are summed over every router replica; executor metrics are read from each
broker's own executor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from services.status.members import Member
from services.status.promtext import Samples, counter_delta

#: nija_breaker_state's values (services/runtime/metrics.py).
BREAKER_NAMES = {0: "closed", 1: "half_open", 2: "open"}
SERVING = "SERVING"


@dataclasses.dataclass(frozen=True)
class Scrape:
    """Everything probed at one moment."""

    #: Monotonic seconds: only differences between scrapes matter.
    at: float
    #: Wall-clock time, for people.
    taken_at: datetime
    #: Member name -> its gRPC health ("SERVING", "NOT_SERVING", or the failed call's code).
    health: Mapping[str, str]
    #: Member name -> its /metrics samples; None when it could not be scraped.
    metrics: Mapping[str, Samples | None]


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    name: str
    kind: str
    target: str
    health: str
    #: Whether /metrics answered in the latest scrape.
    metrics_ok: bool


@dataclasses.dataclass(frozen=True)
class BrokerStatus:
    broker: str
    service: str
    health: str
    #: "closed", "half_open", "open", or "unknown" (its executor exports no breaker state).
    breaker: str
    queue_depth: int | None
    #: Orders routed to this broker (every router replica, each attempt) since they started.
    routed: int
    routed_per_s: float | None
    #: Orders this executor brought to a final state, and of those, FILLED.
    executions: int
    executions_per_s: float | None
    successes: int
    #: FILLED / final over the window (None: nothing ended in it); and since the executor started.
    success_rate: float | None
    success_rate_total: float | None
    #: Orders this broker refused that went to the next broker: since start, and in the window.
    failovers: int
    failovers_recent: int | None


@dataclasses.dataclass(frozen=True)
class Totals:
    routed: int
    routed_per_s: float | None
    executions: int
    executions_per_s: float | None
    successes: int
    success_rate: float | None
    success_rate_total: float | None
    failovers: int
    failovers_recent: int | None
    #: Signals the permission service denied, in the window.
    denials_recent: int | None
    #: Mean routing decision time over the window (milliseconds); None when nothing was routed.
    routing_latency_ms: float | None
    #: Live WatchUpdates streams on the aggregator.
    watchers: int | None


@dataclasses.dataclass(frozen=True)
class MeshStatus:
    taken_at: str
    #: Seconds between the two scrapes the rates come from (0: one scrape, no rates).
    window_s: float
    services: tuple[ServiceStatus, ...]
    brokers: tuple[BrokerStatus, ...]
    totals: Totals

    @property
    def not_serving(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services if s.health != SERVING)

    @property
    def serving(self) -> bool:
        return bool(self.services) and not self.not_serving

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "serving": self.serving, "not_serving": list(self.not_serving)}


@dataclasses.dataclass(frozen=True)
class _Counter:
    """A counter summed over some members: its value now and its growth over the window."""

    total: float
    delta: float | None


def _counter(names: Sequence[str], previous: Scrape | None, current: Scrape, metric: str, **labels: str) -> _Counter:
    total = sum((current.metrics.get(n) or Samples()).total(metric, **labels) for n in names)
    if previous is None:
        return _Counter(total, None)
    deltas = [counter_delta(previous.metrics.get(n), current.metrics.get(n), metric, **labels) for n in names]
    known = [d for d in deltas if d is not None]
    return _Counter(total, sum(known) if known else None)


def build_view(members: Sequence[Member], previous: Scrape | None, current: Scrape) -> MeshStatus:
    """The mesh as `current` saw it, with rates over the time since `previous` (None: no rates)."""
    window = current.at - previous.at if previous is not None else 0.0

    def rate(counter: _Counter) -> float | None:
        return counter.delta / window if counter.delta is not None and window > 0 else None

    routers = [m.name for m in members if m.kind == "router"]
    executors = [m for m in members if m.broker is not None]

    brokers = []
    for member in executors:
        labels = {"broker": member.broker or ""}
        routed = _counter(routers, previous, current, "nija_trades_routed_total", **labels)
        failovers = _counter(routers, previous, current, "nija_failovers_total", **labels)
        executions = _counter([member.name], previous, current, "nija_executions_total", **labels)
        successes = _counter([member.name], previous, current, "nija_executions_success_total", **labels)
        gauges = current.metrics.get(member.name) or Samples()
        breaker = gauges.value("nija_breaker_state", **labels)
        depth = gauges.value("nija_executor_queue_depth", **labels)
        brokers.append(BrokerStatus(
            broker=member.broker or "", service=member.name, health=current.health.get(member.name, "UNKNOWN"),
            breaker=BREAKER_NAMES.get(int(breaker), "unknown") if breaker is not None else "unknown",
            queue_depth=int(depth) if depth is not None else None,
            routed=int(routed.total), routed_per_s=rate(routed),
            executions=int(executions.total), executions_per_s=rate(executions), successes=int(successes.total),
            success_rate=_ratio(successes.delta, executions.delta),
            success_rate_total=_ratio(successes.total, executions.total),
            failovers=int(failovers.total), failovers_recent=_count(failovers.delta),
        ))

    names = [m.name for m in executors]
    routed = _counter(routers, previous, current, "nija_trades_routed_total")
    failovers = _counter(routers, previous, current, "nija_failovers_total")
    denials = _counter(routers, previous, current, "nija_reservation_denials_total")
    latency = _counter(routers, previous, current, "nija_routing_latency_seconds_sum")
    decisions = _counter(routers, previous, current, "nija_routing_latency_seconds_count")
    executions = _counter(names, previous, current, "nija_executions_total")
    successes = _counter(names, previous, current, "nija_executions_success_total")
    aggregator = current.metrics.get("aggregator")
    watchers = aggregator.value("nija_stream_watchers") if aggregator is not None else None
    totals = Totals(
        routed=int(routed.total), routed_per_s=rate(routed),
        executions=int(executions.total), executions_per_s=rate(executions), successes=int(successes.total),
        success_rate=_ratio(successes.delta, executions.delta),
        success_rate_total=_ratio(successes.total, executions.total),
        failovers=int(failovers.total), failovers_recent=_count(failovers.delta), denials_recent=_count(denials.delta),
        routing_latency_ms=(
            latency.delta / decisions.delta * 1000.0 if latency.delta is not None and decisions.delta else None
        ),
        watchers=int(watchers) if watchers is not None else None,
    )
    services = tuple(
        ServiceStatus(
            m.name, m.kind, m.target, current.health.get(m.name, "UNKNOWN"), current.metrics.get(m.name) is not None
        )
        for m in members
    )
    return MeshStatus(
        taken_at=current.taken_at.isoformat(timespec="seconds"), window_s=round(window, 3),
        services=services, brokers=tuple(brokers), totals=totals,
    )


def _ratio(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


def _count(delta: float | None) -> int | None:
    return int(delta) if delta is not None else None
