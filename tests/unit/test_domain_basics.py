from decimal import Decimal

import pytest

from services.domain.breaker import BreakerState, CircuitBreaker
from services.domain.ids import client_order_id
from services.domain.money import BadDecimal, floor_to_step, fmt, parse_decimal, parse_positive
from services.domain.performance import LatencyAverage, PairPerformance
from services.domain.signal import SignalProblem, check_id, check_pair, check_size
from services.domain.states import TERMINAL, IllegalTransition, Status, check_transition
from services.domain.work_queue import PriorityWorkQueue, QueueFull


@pytest.mark.parametrize("text", ["", " 5", "5 ", "5\n", "NaN", "nan", "inf", "-Infinity", "1e5", "abc", "1.2.3", "0x10", "1_000", "+5"])
def test_parse_decimal_rejects_non_plain_numbers(text):
    with pytest.raises(BadDecimal):
        parse_decimal(text)


def test_parse_decimal_exact():
    assert parse_decimal("0.1") + parse_decimal("0.2") == Decimal("0.3")
    assert parse_decimal("-3.25") == Decimal("-3.25")
    with pytest.raises(BadDecimal):
        parse_decimal("1." + "1" * 19)  # more than 18 fraction digits
    with pytest.raises(BadDecimal):
        parse_positive("0", "size_usd")
    with pytest.raises(BadDecimal):
        parse_positive("-1", "size_usd")


def test_fmt_and_steps():
    assert fmt(Decimal("1.2300")) == "1.23"
    assert fmt(Decimal("1E+3")) == "1000"
    assert fmt(Decimal(0)) == "0"
    assert floor_to_step(Decimal("0.0041667"), Decimal("0.0001")) == Decimal("0.0041")


@pytest.mark.parametrize("bad", ["", "BTCUSD", "btc-usd", "BTC-USD\n", "BTC-USD-X", "B-USD"])
def test_pair_rules(bad):
    with pytest.raises(SignalProblem):
        check_pair(bad)
    assert check_pair("BTC-USD") == "BTC-USD"


def test_id_and_size_rules():
    with pytest.raises(SignalProblem):
        check_id("", "user_id")
    with pytest.raises(SignalProblem):
        check_id("a" * 129, "user_id")
    with pytest.raises(SignalProblem):
        check_id("bad id", "signal_id")
    with pytest.raises(SignalProblem) as info:
        check_size("NaN")
    assert info.value.field == "size_usd"
    with pytest.raises(SignalProblem):
        check_size("1000000001")


def test_transition_table():
    path = [Status.PENDING, Status.ROUTING, Status.QUEUED, Status.EXECUTING, Status.PARTIAL_FILL, Status.FILLED]
    current = None
    for status in path:
        current = check_transition(current, status)
    for terminal in TERMINAL:
        for status in Status:
            with pytest.raises(IllegalTransition):
                check_transition(terminal, status)
    with pytest.raises(IllegalTransition):
        check_transition(None, Status.FILLED)
    with pytest.raises(IllegalTransition):
        check_transition(Status.PENDING, Status.FILLED)
    with pytest.raises(IllegalTransition):
        check_transition(Status.PARTIAL_FILL, Status.REJECTED)
    assert check_transition(Status.PARTIAL_FILL, Status.EXECUTING) is Status.EXECUTING  # next TWAP slice


def test_breaker_opens_after_five_and_admits_one_probe():
    now = [0.0]
    breaker = CircuitBreaker(lambda: now[0], failure_threshold=5, open_seconds=60)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    now[0] = 59.9
    assert breaker.state is BreakerState.OPEN
    now[0] = 60.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    now[0] = 120.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_success_resets_the_consecutive_count():
    breaker = CircuitBreaker(lambda: 0.0, failure_threshold=5)
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_priority_queue_order_and_cap():
    queue = PriorityWorkQueue[str](max_size=4)
    for item, prio in [("entry-1", 3), ("stop", 1), ("entry-2", 3), ("exit", 2)]:
        queue.push(item, prio)
    with pytest.raises(QueueFull):
        queue.push("x", 1)
    assert [queue.pop() for _ in range(4)] == ["stop", "exit", "entry-1", "entry-2"]
    assert queue.pop() is None


def test_client_order_ids_deterministic_and_distinct():
    a = client_order_id("alice", "s1", "binance", 0)
    assert a == client_order_id("alice", "s1", "binance", 0)
    assert len({a, client_order_id("bob", "s1", "binance", 0), client_order_id("alice", "s1", "kraken", 0),
                client_order_id("alice", "s1", "binance", 1)}) == 4
    assert len(a) <= 36


def test_performance_window_and_latency_average():
    perf = PairPerformance(window=100)
    assert perf.success_rate("binance", "BTC-USD") is None
    for i in range(150):
        perf.record("binance", "BTC-USD", i >= 100)  # the first 50 failures fall out of the window
    assert perf.success_rate("binance", "BTC-USD") == 0.5
    avg = LatencyAverage(alpha=0.5)
    avg.observe(100)
    avg.observe(200)
    assert avg.value_ms == 150
