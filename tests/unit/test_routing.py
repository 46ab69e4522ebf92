"""All-in cost, policies, load balancing, preferences and splitting: the router's decision."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

import pytest

from services.domain.cost import estimate_cost, plan_split, walk
from services.domain.routing import Balancing, BalancingConfig, Policy, RoutingChoices, plan_route
from services.domain.scoring import BrokerSnapshot, PairLiquidity
from services.domain.signal import ExecutionMethod, Side, Signal, SignalType

D = Decimal


def book(bid="99", ask="101", levels=((D(101), D(10)), (D(102), D(10))), withdrawal="0"):
    bids = ((D(bid), D(10)), (D(bid) - 1, D(10)))
    return PairLiquidity(
        bid_usd=sum(p * q for p, q in bids), ask_usd=sum(p * q for p, q in levels),
        bids=bids, asks=tuple(levels), withdrawal_fee=D(withdrawal),
    )


def snap(broker, maker="0.001", taker="0.002", depth=0, pairs=None, healthy=True, latency=0.0):
    return BrokerSnapshot(
        broker=broker, healthy=healthy, maker_fee=D(maker), taker_fee=D(taker), avg_latency_ms=latency,
        success_rate=1.0, queue_depth=depth, max_queue=1000, pairs=pairs or {"SOL-USD": book()},
    )


def signal(size="500", side=Side.BUY, kind=SignalType.ENTRY):
    return Signal("s", "alice", "SOL-USD", side, D(size), kind)


def plan(snaps, choices=RoutingChoices(), balancing=BalancingConfig(Balancing.BEST), sig=None, rng=None):
    return plan_route(sig or signal(), list(snaps), snaps, lambda b, p: None, choices, balancing, rng or random.Random(1))


def test_walk_takes_levels_in_order():
    levels = ((D(100), D(1)), (D(110), D(1)))
    assert walk(levels, D(100)) == (D(1), D(100))
    quantity, spent = walk(levels, D(155))
    assert spent == D(155) and quantity == D(1) + D(55) / D(110)
    assert walk(levels, D(211)) is None


def test_all_in_cost_by_hand():
    # mid 100; $1,520 buys 10 @ 101 ($1,010) and 5 @ 102 ($510): 15 units for $1,520, 20 over the mid.
    cost = estimate_cost(Side.BUY, D(1520), book(withdrawal="0.01"), D("0.002"), include_withdrawal=True)
    quantity = D(15)
    assert cost.fee_usd == D("3.04")
    assert cost.withdrawal_usd == D("1.00")  # 0.01 units at the mid
    assert cost.slippage_usd == D(20)
    assert cost.total_usd == cost.fee_usd + cost.slippage_usd + cost.withdrawal_usd
    assert cost.slippage_bps == pytest.approx(float((D(1520) / quantity - 100) / 100 * 10000))
    without = estimate_cost(Side.BUY, D(1520), book(withdrawal="0.01"), D("0.002"), include_withdrawal=False)
    assert without.withdrawal_usd == 0
    sell = estimate_cost(Side.SELL, D(99), book(), D("0.002"), include_withdrawal=True)
    assert sell.withdrawal_usd == 0 and sell.slippage_usd == D(1)  # 1 unit at 99 vs mid 100
    assert estimate_cost(Side.BUY, D(5000), book(), D("0.002"), False) is None


def test_cost_policy_picks_cheapest_all_in_where_score_picks_lowest_maker_fee():
    snaps = {
        # lowest maker fee (best seed score) but a wide book and a high taker fee
        "binance": snap("binance", maker="0.0005", taker="0.004", pairs={"SOL-USD": book(levels=((D(103), D(10)),))}),
        "kraken": snap("kraken", maker="0.0016", taker="0.0026"),
    }
    assert plan(snaps).routes[0].broker == "binance"
    by_cost = plan(snaps, RoutingChoices(policy=Policy.COST))
    assert by_cost.routes[0].broker == "kraken"
    assert by_cost.routes[0].policy == "cost"
    assert by_cost.routes[0].estimated_cost < by_cost.quotes[1].cost.total_usd


def test_max_slippage_excludes_with_a_reason():
    snaps = {"kraken": snap("kraken", pairs={"SOL-USD": book(levels=((D(101), D(100)),))})}  # 100 bps over mid
    assert plan(snaps, RoutingChoices(max_slippage_bps=150), sig=signal(size="500")).routable
    result = plan(snaps, RoutingChoices(max_slippage_bps=50), sig=signal(size="500"))
    assert not result.routable
    assert "expected slippage" in result.quotes[0].exclusion and "max 50 bps" in result.why_not()


def test_preferred_brokers_go_first_and_the_rest_stay_for_failover():
    snaps = {b: snap(b, maker=m) for b, m in [("binance", "0.001"), ("kraken", "0.0016"), ("alpaca", "0.0015")]}
    result = plan(snaps, RoutingChoices(preferred=("kraken",)))
    assert [r.broker for r in result.routes] == ["kraken", "binance", "alpaca"]
    assert [r.attempt for r in result.routes] == [1, 2, 3]


def test_score_weighted_balancing_spreads_near_equal_brokers():
    snaps = {b: snap(b) for b in ("binance", "kraken", "coinbase")}
    rng = random.Random(7)
    firsts = Counter(
        plan(snaps, balancing=BalancingConfig(Balancing.SCORE_WEIGHTED, margin=2.0), rng=rng).routes[0].broker
        for _ in range(3000)
    )
    assert set(firsts) == {"binance", "kraken", "coinbase"}
    assert all(900 < n < 1100 for n in firsts.values()), firsts


def test_balancing_never_leaves_the_margin_or_the_users_brokers():
    snaps = {"binance": snap("binance"), "coinbase": snap("coinbase", maker="0.006"), "kraken": snap("kraken")}
    rng = random.Random(3)
    for _ in range(300):
        result = plan_route(signal(), ["binance", "coinbase"], snaps, lambda b, p: None, RoutingChoices(),
                            BalancingConfig(Balancing.SCORE_WEIGHTED, margin=2.0), rng)
        assert result.routes[0].broker == "binance"  # coinbase scores 15 points lower; kraken not allowed
        assert {r.broker for r in result.routes} == {"binance", "coinbase"}


def test_least_loaded_picks_the_shortest_queue_within_the_margin():
    snaps = {"binance": snap("binance", depth=15), "kraken": snap("kraken", depth=3), "alpaca": snap("alpaca", depth=9)}
    result = plan(snaps, balancing=BalancingConfig(Balancing.LEAST_LOADED, margin=5.0))
    assert result.routes[0].broker == "kraken"


def test_split_when_no_single_book_can_take_the_order():
    thin = {"SOL-USD": book(levels=((D(101), D(6)), (D(102), D(6))))}  # ~$1,218 a side
    snaps = {"binance": snap("binance", pairs=thin), "kraken": snap("kraken", pairs=thin)}
    order = signal(size="1000")  # 2x rule: each venue needs $2,000 visible -> both excluded
    assert not plan(snaps, sig=order).routes
    result = plan(snaps, RoutingChoices(allow_split=True), sig=order)
    assert result.routable and result.split is not None
    assert set(result.split.legs) == {"binance", "kraken"}
    assert sum(result.split.legs.values()) == D(1000)
    for broker, usd in result.split.legs.items():
        assert usd * 2 <= thin["SOL-USD"].ask_usd  # never more than half a venue's visible depth


def test_split_only_when_cheaper_than_the_best_single_venue():
    deep = {"SOL-USD": book(levels=((D(101), D(100)),))}
    snaps = {"binance": snap("binance", pairs=deep), "kraken": snap("kraken", pairs=deep)}
    assert plan(snaps, RoutingChoices(allow_split=True), sig=signal(size="1000")).split is None


def test_split_plan_takes_the_cheapest_levels_after_fees():
    cheap = book(levels=((D(100.5), D(4)), (D(104), D(100))))
    dear = book(levels=((D(101), D(100)),))
    legs = plan_split(Side.BUY, D(600), {"a": (cheap, D("0.001")), "b": (dear, D("0.001"))}, D(10))
    assert legs == {"a": D("201.00"), "b": D("399.00")}  # half of a's 402 at 100.5, the rest at 101
    assert plan_split(Side.BUY, D(10_000), {"a": (cheap, D("0.001"))}, D(10)) is None


def test_small_legs_fold_into_the_largest():
    a = book(levels=((D(100.5), D("0.1")), (D(104), D(100))))
    b = book(levels=((D(101), D(100)),))
    legs = plan_split(Side.BUY, D(600), {"a": (a, D("0.001")), "b": (b, D("0.001"))}, D(10))
    assert legs == {"b": D("600.00")}


@pytest.mark.parametrize("size,kind,method", [("20000", SignalType.ENTRY, ExecutionMethod.TWAP),
                                              ("500", SignalType.EXIT, ExecutionMethod.MARKET)])
def test_routes_carry_the_seed_method_and_cost(size, kind, method):
    deep = {"SOL-USD": book(levels=((D(101), D(1000)),))}
    result = plan({"kraken": snap("kraken", pairs=deep)}, sig=signal(size=size, kind=kind))
    assert result.routes[0].method is method
    assert result.routes[0].estimated_cost == result.quotes[0].cost.total_usd
