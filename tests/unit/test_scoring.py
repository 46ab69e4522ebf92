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
        avg_latency_ms=latency,
        success_rate=success,
        queue_depth=depth,
        max_queue=max_queue,
        pairs=pairs if pairs is not None else {"BTC-USD": liquidity},
    )


def signal(size="250", kind=SignalType.ENTRY, side=Side.BUY, pair="BTC-USD"):
    return Signal("s1", "alice", pair, side, Decimal(size), kind)


def test_seed_formula_exactly():
    score = score_broker(snap("kraken", maker="0.0016", latency=120.0, success=0.95, depth=250, max_queue=1000), 0.8)
    assert score.fee_score == pytest.approx(84.0)
    assert score.latency_score == pytest.approx(88.0)
    assert score.success_score == pytest.approx(95.0)
    assert score.load_score == pytest.approx(75.0)
    assert score.pair_score == pytest.approx(80.0)
    assert score.total == pytest.approx(0.30 * 84 + 0.20 * 88 + 0.25 * 95 + 0.15 * 75 + 0.10 * 80)


def test_scores_floor_at_zero_and_pair_defaults_to_50():
    score = score_broker(snap("x", maker="0.02", latency=5000.0, depth=5000, max_queue=1000), None)
    assert (score.fee_score, score.latency_score, score.load_score) == (0.0, 0.0, 0.0)
    assert score.pair_score == 50.0


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
