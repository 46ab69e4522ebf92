"""The seed's broker scoring, exactly, as pure code.

For each candidate broker (the user may use it and the broker lists the pair):
  excluded when unhealthy (breaker OPEN / NOT_SERVING / unreachable) or when the visible liquidity
  on the side the order takes is under 2x the order size;
  fee score     = max(0, 100 - maker_fee * 10000)
  latency score = max(0, 100 - avg_latency_ms / 10)
  success score = success_rate * 100
  load score    = max(0, 100 - queue_depth / max_queue * 100)
  pair score    = broker+pair success rate over its last 100 executions * 100 (50 when none)
  total         = 0.30 fee + 0.20 latency + 0.25 success + 0.15 load + 0.10 pair
The best total wins; ties go to the broker name that sorts first, so a decision is repeatable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from services.domain.signal import ExecutionMethod, Side, Signal, execution_method, priority

WEIGHTS = {"fee": 0.30, "latency": 0.20, "success": 0.25, "load": 0.15, "pair": 0.10}
LIQUIDITY_MULTIPLE = Decimal(2)
NO_HISTORY_PAIR_SCORE = 50.0


# A book side as (price, quantity) levels, best first.
BookSide = tuple[tuple[Decimal, Decimal], ...]


@dataclasses.dataclass(frozen=True)
class PairLiquidity:
    bid_usd: Decimal
    ask_usd: Decimal
    bids: BookSide = ()
    asks: BookSide = ()
    # Withdrawal fee for the base asset, in base units.
    withdrawal_fee: Decimal = Decimal(0)

    def for_side(self, side: Side) -> Decimal:
        # A buy takes the asks, a sell hits the bids.
        return self.ask_usd if side is Side.BUY else self.bid_usd

    def levels_for(self, side: Side) -> BookSide:
        return self.asks if side is Side.BUY else self.bids

    @property
    def mid(self) -> Decimal | None:
        if not self.bids or not self.asks:
            return None
        return (self.bids[0][0] + self.asks[0][0]) / 2


@dataclasses.dataclass(frozen=True)
class BrokerSnapshot:
    """What the router knows about one executor, from its last info report."""

    broker: str
    healthy: bool
    maker_fee: Decimal
    taker_fee: Decimal
    avg_latency_ms: float
    success_rate: float
    queue_depth: int
    max_queue: int
    pairs: Mapping[str, PairLiquidity]
    #: A live venue: only users with API keys stored for this broker can be routed here.
    requires_api_keys: bool = False


@dataclasses.dataclass(frozen=True)
class BrokerScore:
    broker: str
    total: float
    fee_score: float
    latency_score: float
    success_score: float
    load_score: float
    pair_score: float
    maker_fee: Decimal
    avg_latency_ms: float

    @property
    def reason(self) -> str:
        return (
            f"Score: {self.total:.1f} (fees: {self.fee_score:.0f}, latency: {self.latency_score:.0f}, "
            f"success: {self.success_score:.0f}, load: {self.load_score:.0f}, pair: {self.pair_score:.0f})"
        )


@dataclasses.dataclass(frozen=True)
class Exclusion:
    broker: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Route:
    broker: str
    method: ExecutionMethod
    priority: int
    estimated_fees: Decimal
    estimated_latency_ms: float
    score: float
    reason: str
    policy: str = "score"
    estimated_cost: Decimal | None = None
    attempt: int = 1


def score_broker(
    snapshot: BrokerSnapshot, pair_success_rate: float | None
) -> BrokerScore:
    fee_score = max(0.0, 100.0 - float(snapshot.maker_fee * 10000))
    latency_score = max(0.0, 100.0 - snapshot.avg_latency_ms / 10.0)
    success_score = snapshot.success_rate * 100.0
    max_queue = max(1, snapshot.max_queue)
    load_score = max(0.0, 100.0 - snapshot.queue_depth / max_queue * 100.0)
    pair_score = NO_HISTORY_PAIR_SCORE if pair_success_rate is None else pair_success_rate * 100.0
    total = (
        fee_score * WEIGHTS["fee"]
        + latency_score * WEIGHTS["latency"]
        + success_score * WEIGHTS["success"]
        + load_score * WEIGHTS["load"]
        + pair_score * WEIGHTS["pair"]
    )
    return BrokerScore(
        broker=snapshot.broker,
        total=total,
        fee_score=fee_score,
        latency_score=latency_score,
        success_score=success_score,
        load_score=load_score,
        pair_score=pair_score,
        maker_fee=snapshot.maker_fee,
        avg_latency_ms=snapshot.avg_latency_ms,
    )


def rank_brokers(
    signal: Signal,
    candidates: Iterable[str],
    snapshots: Mapping[str, BrokerSnapshot],
    pair_success_rate: Callable[[str, str], float | None],
) -> tuple[list[BrokerScore], list[Exclusion]]:
    """Score every candidate broker; best first. Excluded brokers come back with their reason."""
    ranked: list[BrokerScore] = []
    excluded: list[Exclusion] = []
    needed = signal.size_usd * LIQUIDITY_MULTIPLE
    for broker in sorted(set(candidates)):
        snap = snapshots.get(broker)
        if snap is None:
            excluded.append(Exclusion(broker, "no executor info (unreachable)"))
            continue
        liquidity = snap.pairs.get(signal.pair)
        if liquidity is None:
            excluded.append(Exclusion(broker, f"{signal.pair} not listed"))
            continue
        if not snap.healthy:
            excluded.append(Exclusion(broker, "unhealthy (breaker open or not serving)"))
            continue
        visible = liquidity.for_side(signal.side)
        if visible < needed:
            excluded.append(
                Exclusion(broker, f"insufficient liquidity (${visible:.2f} < ${needed:.2f})")
            )
            continue
        ranked.append(score_broker(snap, pair_success_rate(broker, signal.pair)))
    ranked.sort(key=lambda s: (-s.total, s.broker))
    return ranked, excluded


def route_for(signal: Signal, score: BrokerScore) -> Route:
    """The seed's RouteDecision for the chosen broker."""
    return Route(
        broker=score.broker,
        method=execution_method(signal.size_usd, signal.signal_type, signal.limit_price),
        priority=priority(signal.signal_type),
        estimated_fees=signal.size_usd * score.maker_fee,
        estimated_latency_ms=score.avg_latency_ms,
        score=score.total,
        reason=score.reason,
    )
