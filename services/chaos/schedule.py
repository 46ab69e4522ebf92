"""A fault run's schedule: which service is killed when, and what each exchange does wrong when.

Pure and seeded: the same seed and settings give the same schedule, so a run that went wrong can
be run again. Kills go round the targets in a shuffled order, reshuffled each round, so every
service kind is hit; exchange faults take turns over the brokers, one at a time per broker. The
schedule ends `quiet_s` before the run does: the last part of a run is recovery, not faults.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Sequence


class Kind(enum.Enum):
    KILL = "kill"  # kill -9 the service, start it again at once on its port
    BLACKHOLE = "blackhole"  # the exchange answers nothing but UNAVAILABLE
    LATENCY = "latency"  # every call to the exchange takes longer
    ERRORS = "errors"  # a share of calls fail like a 5xx
    RATE_LIMITS = "rate_limits"  # a share of calls are refused 429 with a retry-after
    LOST_RESPONSES = "lost_responses"  # orders execute but their answer is lost
    DB_DISCONNECT = "db_disconnect"  # PostgreSQL drops every connection of the mesh, as a restart does


EXCHANGE_FAULTS = (Kind.BLACKHOLE, Kind.LATENCY, Kind.ERRORS, Kind.RATE_LIMITS, Kind.LOST_RESPONSES)


@dataclasses.dataclass(frozen=True)
class Event:
    at_s: float
    kind: Kind
    #: A service's name (KILL) or a broker (exchange faults).
    target: str
    #: How long an exchange fault lasts (0 for a kill).
    duration_s: float = 0.0
    #: The fault's figures: latency_ms, error_rate, rate_limit_rate, retry_after_ms, lose_response_rate.
    params: tuple[tuple[str, float], ...] = ()

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v:g}" for k, v in self.params)
        span = f" for {self.duration_s:.1f} s" if self.duration_s else ""
        return f"{self.at_s:7.1f} s  {self.kind.value:<15} {self.target}{span}{f' ({extra})' if extra else ''}"


@dataclasses.dataclass(frozen=True)
class Plan:
    seed: int
    duration_s: float
    kill_targets: Sequence[str]
    brokers: Sequence[str]
    #: Mean seconds between kills, and between exchange faults (each drawn around it).
    kill_every_s: float = 15.0
    exchange_fault_every_s: float = 10.0
    exchange_fault_s: tuple[float, float] = (3.0, 8.0)
    #: Faults start after `warmup_s` and stop `quiet_s` before the end.
    warmup_s: float = 5.0
    quiet_s: float = 20.0
    #: PostgreSQL mode: the database drops every connection about this often (0: never).
    db_disconnect_every_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.kill_targets or not self.brokers:
            raise ValueError("a plan needs services to kill and brokers to fault")
        if self.kill_every_s <= 0 or self.exchange_fault_every_s <= 0:
            raise ValueError("fault intervals must be positive")
        if self.duration_s <= self.warmup_s + self.quiet_s:
            raise ValueError(f"a {self.duration_s:g} s run leaves no time for faults after its warm-up and quiet end")


def schedule(plan: Plan) -> list[Event]:
    """Every fault of the run, in time order."""
    rng = random.Random(plan.seed)
    end = plan.duration_s - plan.quiet_s
    events = _kills(plan, rng, end) + _exchange_faults(plan, rng, end) + _db_disconnects(plan, rng, end)
    return sorted(events, key=lambda e: (e.at_s, e.kind.value, e.target))


def _kills(plan: Plan, rng: random.Random, end: float) -> list[Event]:
    events: list[Event] = []
    order: list[str] = []
    at = plan.warmup_s + rng.uniform(0, plan.kill_every_s)
    while at < end:
        if not order:
            order = list(plan.kill_targets)
            rng.shuffle(order)
        events.append(Event(round(at, 3), Kind.KILL, order.pop()))
        at += rng.uniform(0.5, 1.5) * plan.kill_every_s
    return events


def _exchange_faults(plan: Plan, rng: random.Random, end: float) -> list[Event]:
    events: list[Event] = []
    free_at = {broker: 0.0 for broker in plan.brokers}
    at = plan.warmup_s + rng.uniform(0, plan.exchange_fault_every_s)
    while at < end:
        kind = rng.choice(EXCHANGE_FAULTS)
        idle = [b for b in plan.brokers if free_at[b] <= at]
        if idle:
            broker = rng.choice(idle)
            duration = round(min(rng.uniform(*plan.exchange_fault_s), end - at), 3)
            events.append(Event(round(at, 3), kind, broker, duration, _params(kind, rng)))
            free_at[broker] = at + duration
        at += rng.uniform(0.5, 1.5) * plan.exchange_fault_every_s
    return events


def _db_disconnects(plan: Plan, rng: random.Random, end: float) -> list[Event]:
    events: list[Event] = []
    if plan.db_disconnect_every_s <= 0:
        return events
    at = plan.warmup_s + rng.uniform(0, plan.db_disconnect_every_s)
    while at < end:
        events.append(Event(round(at, 3), Kind.DB_DISCONNECT, "database"))
        at += rng.uniform(0.5, 1.5) * plan.db_disconnect_every_s
    return events


def _params(kind: Kind, rng: random.Random) -> tuple[tuple[str, float], ...]:
    if kind is Kind.LATENCY:
        return (("latency_ms", float(rng.choice((200, 500, 1500)))),)
    if kind is Kind.ERRORS:
        return (("error_rate", rng.choice((0.2, 0.5))),)
    if kind is Kind.RATE_LIMITS:
        return (("rate_limit_rate", rng.choice((0.3, 0.6))), ("retry_after_ms", float(rng.choice((200, 1000)))))
    if kind is Kind.LOST_RESPONSES:
        return (("lose_response_rate", rng.choice((0.2, 0.5))),)
    return ()


def signals_due(elapsed_s: float, duration_s: float, rate_per_s: float) -> int:
    """How many signals the load should have sent `elapsed_s` into the run: one at the start, then
    `rate_per_s` a second, and exactly duration x rate once the duration is over, however late
    the load loop woke (a loaded machine) for its last ticks."""
    total = round(duration_s * rate_per_s)
    if elapsed_s >= duration_s:
        return total
    return min(total, int(elapsed_s * rate_per_s) + 1)
