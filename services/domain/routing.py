"""The router's decision for one signal, as pure code: who can take it, in which order to try
them, and whether to split it. Written down in the order it is decided:

  1. the seed's exclusions and score for every candidate broker (scoring.rank_brokers);
  2. all-in cost for every listed broker; a broker whose expected slippage exceeds the user's
     maximum is excluded;
  3. ranking by policy: the seed's weighted score (default) or the cheapest all-in cost;
  4. load balancing: brokers scoring within `margin` of the best share the flow (best,
     score-weighted or least-loaded);
  5. the user's preferred brokers go first when eligible, the rest stay as failover;
  6. splitting (when allowed): across venues by their books, when no single venue can take the
     order or when the split is cheaper all-in than the cheapest single venue.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from services.domain.cost import CostEstimate, estimate_cost, plan_split
from services.domain.scoring import BrokerScore, BrokerSnapshot, Route, rank_brokers, route_for
from services.domain.signal import Signal, execution_method, priority


class Policy(enum.Enum):
    SCORE = "score"
    COST = "cost"


class Balancing(enum.Enum):
    BEST = "best"
    SCORE_WEIGHTED = "score_weighted"
    LEAST_LOADED = "least_loaded"


@dataclasses.dataclass(frozen=True)
class RoutingChoices:
    """What this signal asks for, already merged with the user's preferences."""

    policy: Policy = Policy.SCORE
    allow_split: bool = False
    include_withdrawal: bool = False
    max_slippage_bps: int = 0  # 0: no limit
    preferred: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class BalancingConfig:
    strategy: Balancing = Balancing.SCORE_WEIGHTED
    # Brokers whose seed score is within this many points of the best share the flow. Six points
    # covers the seed's pair-score asymmetry (no history 50 vs a clean history 100: 5 points), so
    # the first broker to fill a pair does not take all of a burst from equally good ones.
    margin: float = 6.0
    min_split_leg_usd: Decimal = Decimal(10)


@dataclasses.dataclass(frozen=True)
class BrokerQuote:
    broker: str
    liquidity_usd: Decimal
    score: BrokerScore | None = None
    cost: CostEstimate | None = None
    exclusion: str = ""

    @property
    def eligible(self) -> bool:
        return not self.exclusion


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    legs: dict[str, Decimal]  # broker -> USD
    costs: dict[str, CostEstimate]

    @property
    def total_cost_usd(self) -> Decimal:
        return sum((c.total_usd for c in self.costs.values()), Decimal(0))


@dataclasses.dataclass(frozen=True)
class RoutePlan:
    # Every known broker: eligible ones in the order they would be tried, then the excluded.
    quotes: list[BrokerQuote]
    # The routes to try, first choice first (failover goes down the list).
    routes: list[Route]
    split: SplitPlan | None = None

    @property
    def routable(self) -> bool:
        return bool(self.routes) or self.split is not None

    def why_not(self) -> str:
        excluded = "; ".join(f"{q.broker}: {q.exclusion}" for q in self.quotes if q.exclusion)
        return excluded or "no brokers allowed"


def plan_route(
    signal: Signal,
    candidates: Iterable[str],
    snapshots: Mapping[str, BrokerSnapshot],
    pair_success_rate: Callable[[str, str], float | None],
    choices: RoutingChoices,
    balancing: BalancingConfig,
    rng: random.Random,
) -> RoutePlan:
    candidates = sorted(set(candidates))
    ranked, excluded = rank_brokers(signal, candidates, snapshots, pair_success_rate)
    costs = {b: _cost(signal, snapshots[b], choices) for b in candidates if b in snapshots}

    eligible: list[BrokerQuote] = []
    quotes_excluded: list[BrokerQuote] = []
    for score in ranked:
        cost = costs.get(score.broker)
        quote = BrokerQuote(score.broker, _liquidity(signal, snapshots[score.broker]), score, cost)
        if cost is None:
            quote = dataclasses.replace(quote, exclusion="book cannot fill this size")
        elif choices.max_slippage_bps and cost.slippage_bps > choices.max_slippage_bps:
            quote = dataclasses.replace(
                quote,
                exclusion=f"expected slippage {cost.slippage_bps:.1f} bps > max {choices.max_slippage_bps} bps",
            )
        (eligible if quote.eligible else quotes_excluded).append(quote)
    for e in excluded:
        snap = snapshots.get(e.broker)
        quotes_excluded.append(
            BrokerQuote(e.broker, _liquidity(signal, snap) if snap else Decimal(0), None, costs.get(e.broker), e.reason)
        )

    if choices.policy is Policy.COST:
        eligible.sort(key=lambda q: (q.cost.total_usd, -q.score.total, q.broker))  # type: ignore[union-attr]
    else:
        eligible = _balance(eligible, balancing, rng)
    if choices.preferred:
        eligible.sort(key=lambda q: q.broker not in choices.preferred)  # stable: keeps the ranking

    routes = [
        dataclasses.replace(
            route_for(signal, q.score), policy=choices.policy.value,  # type: ignore[arg-type]
            estimated_cost=q.cost.total_usd if q.cost else None, attempt=i,
        )
        for i, q in enumerate(eligible, start=1)
    ]
    split = None
    if choices.allow_split:
        split = _split(signal, candidates, snapshots, choices, balancing)
        cheapest_single = min((q.cost.total_usd for q in eligible if q.cost), default=None)
        if split is not None and cheapest_single is not None and split.total_cost_usd >= cheapest_single:
            split = None
    return RoutePlan(quotes=eligible + quotes_excluded, routes=routes, split=split)


def _liquidity(signal: Signal, snap: BrokerSnapshot) -> Decimal:
    book = snap.pairs.get(signal.pair)
    return book.for_side(signal.side) if book else Decimal(0)


def _cost(signal: Signal, snap: BrokerSnapshot, choices: RoutingChoices) -> CostEstimate | None:
    book = snap.pairs.get(signal.pair)
    if book is None:
        return None
    return estimate_cost(signal.side, signal.size_usd, book, snap.taker_fee, choices.include_withdrawal)


def _balance(ranked: list[BrokerQuote], config: BalancingConfig, rng: random.Random) -> list[BrokerQuote]:
    """Move one broker of the near-best group to the front; the others keep their order."""
    if len(ranked) < 2 or config.strategy is Balancing.BEST:
        return ranked
    best = ranked[0].score.total  # type: ignore[union-attr]
    group = [q for q in ranked if best - q.score.total <= config.margin]  # type: ignore[union-attr]
    if len(group) < 2:
        return ranked
    if config.strategy is Balancing.LEAST_LOADED:
        chosen = min(group, key=lambda q: (-q.score.load_score, q.broker))  # type: ignore[union-attr]
    else:
        chosen = rng.choices(group, weights=[q.score.total for q in group])[0]  # type: ignore[union-attr]
    return [chosen, *(q for q in ranked if q is not chosen)]


def _split(
    signal: Signal,
    candidates: list[str],
    snapshots: Mapping[str, BrokerSnapshot],
    choices: RoutingChoices,
    balancing: BalancingConfig,
) -> SplitPlan | None:
    # A venue may take a leg when it is healthy and lists the pair; thin books are the point.
    usable = {}
    for broker in candidates:
        snap = snapshots.get(broker)
        book = snap.pairs.get(signal.pair) if snap else None
        if snap is None or book is None or not snap.healthy or book.mid is None:
            continue
        usable[broker] = (book, snap.taker_fee)
    legs = plan_split(signal.side, signal.size_usd, usable, balancing.min_split_leg_usd)
    if legs is None or len(legs) < 2:
        return None
    costs = {}
    for broker, usd in legs.items():
        cost = estimate_cost(signal.side, usd, usable[broker][0], usable[broker][1], choices.include_withdrawal)
        if cost is None:
            return None
        costs[broker] = cost
    return SplitPlan(legs=legs, costs=costs)


def leg_route(signal: Signal, broker: str, size_usd: Decimal, cost: CostEstimate, policy: Policy) -> Route:
    """The route of one split leg (its own method by its own size)."""
    return Route(
        broker=broker,
        method=execution_method(size_usd, signal.signal_type, signal.limit_price),
        priority=priority(signal.signal_type),
        estimated_fees=cost.fee_usd,
        estimated_latency_ms=0.0,
        score=0.0,
        reason=f"split leg ${size_usd} on {broker}",
        policy=policy.value,
        estimated_cost=cost.total_usd,
        attempt=1,
    )
