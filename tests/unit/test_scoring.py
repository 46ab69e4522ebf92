from decimal import Decimal

import pytest

from services.domain.scoring import (
    BrokerSnapshot,
    PairLiquidity,
    rank_brokers,
    route_for,
    score_broker,
)
from services.domain.signal import ExecutionMethod, Side, Signal, SignalType


def snap(broker, maker="0.001", latency=0.0, success=1.0, depth=0, max_queue=1000, pairs=None, healthy=True):
    liquidity = PairLiquidity(Decimal(1_000_000), Decimal(1_000_000))
    return BrokerSnapshot(
        broker=broker,
        healthy=healthy,
        maker_fee=Decimal(maker),
        taker_fee=Decimal(maker) * 2,
        avg_latency_ms=latency,
        success_rate=success,
        queue_depth=depth,
        max_queue=max_queue,
        pairs=pairs if pairs is not None else {"BTC-USD": liquidity},
    )


def signal(size="250", kind=SignalType.ENTRY, side=Side.BUY, pair="BTC-USD"):
    return Signal("s1", "alice", pair, side, Decimal(size), kind)


# (maker fee, avg latency ms, success rate, queue depth, max queue, pair success rate)
#   -> (fee, latency, success, load, pair, total), computed by hand from the seed's formula.
SEED_CASES = [
    (("0.001", 0.0, 1.0, 0, 1000, None), (90, 100, 100, 100, 50, 92.0)),
    (("0.0016", 120.0, 0.95, 250, 1000, 0.8), (84, 88, 95, 75, 80, 85.8)),
    (("0.006", 500.0, 0.5, 1000, 1000, 0.0), (40, 50, 50, 0, 0, 34.5)),
    (("0.02", 2000.0, 0.0, 2000, 1000, 1.0), (0, 0, 0, 0, 100, 10.0)),
    (("0.0015", 35.5, 0.999, 10, 100, None), (85, 96.45, 99.9, 90, 50, 88.265)),
]


@pytest.mark.parametrize("inputs,expected", SEED_CASES)
def test_seed_formula_on_hand_computed_cases(inputs, expected):
    maker, latency, success, depth, max_queue, pair_rate = inputs
    score = score_broker(snap("x", maker=maker, latency=latency, success=success, depth=depth, max_queue=max_queue), pair_rate)
    got = (score.fee_score, score.latency_score, score.success_score, score.load_score, score.pair_score, score.total)
    assert got == pytest.approx(expected)


def test_ties_go_to_the_broker_name_that_sorts_first():
    snaps = {b: snap(b) for b in ("kraken", "alpaca", "binance")}
    ranked, _ = rank_brokers(signal(), snaps, snaps, lambda b, p: None)
    assert [s.broker for s in ranked] == ["alpaca", "binance", "kraken"]
    assert len({s.total for s in ranked}) == 1


@pytest.mark.parametrize(
    "ask_liquidity,eligible",
    [("500", True), ("499.99", False), ("500.01", True), ("0", False)],
)
def test_liquidity_edge_is_exactly_twice_the_order_size(ask_liquidity, eligible):
    book = {"BTC-USD": PairLiquidity(bid_usd=Decimal(0), ask_usd=Decimal(ask_liquidity))}
    snaps = {"binance": snap("binance", pairs=book)}
    ranked, excluded = rank_brokers(signal(size="250"), ["binance"], snaps, lambda b, p: None)
    assert (len(ranked) == 1) is eligible
    assert (len(excluded) == 1) is not eligible


def test_lowest_fee_wins_when_everything_else_is_equal():
    snaps = {b: snap(b, maker=fee) for b, fee in
             [("coinbase", "0.006"), ("kraken", "0.0016"), ("binance", "0.001"), ("alpaca", "0.0015")]}
    ranked, excluded = rank_brokers(signal(), snaps, snaps, lambda b, p: None)
    assert [s.broker for s in ranked] == ["binance", "alpaca", "kraken", "coinbase"]
    assert excluded == []


def test_exclusions_unlisted_unhealthy_illiquid_unknown():
    thin = {"BTC-USD": PairLiquidity(Decimal(100), Decimal(499))}
    snaps = {
        "coinbase": snap("coinbase", pairs={"ETH-USD": PairLiquidity(Decimal(1e6), Decimal(1e6))}),
        "kraken": snap("kraken", healthy=False),
        "binance": snap("binance", pairs=thin),
    }
    ranked, excluded = rank_brokers(signal(size="250"), ["coinbase", "kraken", "binance", "alpaca"], snaps, lambda b, p: None)
    assert ranked == []
    reasons = {e.broker: e.reason for e in excluded}
    assert "not listed" in reasons["coinbase"]
    assert "unhealthy" in reasons["kraken"]
    assert "insufficient liquidity" in reasons["binance"]  # 499 < 2 x 250
    assert "unreachable" in reasons["alpaca"]


def test_liquidity_is_read_on_the_side_the_order_takes():
    book = {"BTC-USD": PairLiquidity(bid_usd=Decimal(10_000), ask_usd=Decimal(100))}
    snaps = {"binance": snap("binance", pairs=book)}
    assert rank_brokers(signal(side=Side.BUY), ["binance"], snaps, lambda b, p: None)[0] == []
    assert len(rank_brokers(signal(side=Side.SELL), ["binance"], snaps, lambda b, p: None)[0]) == 1


def test_only_candidates_are_scored():
    snaps = {"binance": snap("binance"), "kraken": snap("kraken", maker="0.0016")}
    ranked, _ = rank_brokers(signal(), ["kraken"], snaps, lambda b, p: None)
    assert [s.broker for s in ranked] == ["kraken"]


def test_pair_history_can_outweigh_fees():
    snaps = {"binance": snap("binance", maker="0.001"), "alpaca": snap("alpaca", maker="0.0015")}
    history = {("binance", "BTC-USD"): 0.0, ("alpaca", "BTC-USD"): 1.0}
    ranked, _ = rank_brokers(signal(), snaps, snaps, lambda b, p: history.get((b, p)))
    assert ranked[0].broker == "alpaca"


@pytest.mark.parametrize(
    "size,kind,method,prio",
    [
        ("10000.01", SignalType.ENTRY, ExecutionMethod.TWAP, 3),
        ("10000", SignalType.STOP_LOSS, ExecutionMethod.MARKET, 1),
        ("500", SignalType.EXIT, ExecutionMethod.MARKET, 2),
        ("500", SignalType.ENTRY, ExecutionMethod.LIMIT, 3),
        ("500", SignalType.PROFIT_TAKE, ExecutionMethod.LIMIT, 4),
    ],
)
def test_route_method_priority_and_estimated_fees(size, kind, method, prio):
    score = score_broker(snap("binance", maker="0.001"), None)
    route = route_for(signal(size=size, kind=kind), score)
    assert (route.method, route.priority) == (method, prio)
    assert route.estimated_fees == Decimal(size) * Decimal("0.001")
    assert route.reason.startswith(f"Score: {score.total:.1f}")
