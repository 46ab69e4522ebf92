from decimal import Decimal

import pytest

from services.domain.breaker import BreakerState, CircuitBreaker
from services.domain.ids import client_order_id
from services.domain.money import BadDecimal, floor_to_step, fmt, parse_decimal, parse_positive
from services.domain.performance import LatencyAverage, PairPerformance
from services.domain.signal import SignalProblem, check_id, check_pair, check_size
from services.domain.states import TERMINAL, IllegalTransition, Status, check_transition
from services.domain.work_queue import FairQueue, QueueFull


@pytest.mark.parametrize("text", ["", " 5", "5 ", "5\n", "NaN", "nan", "inf", "-Infinity", "1e5", "abc", "1.2.3", "0x10", "1_000", "+5",
                                  "１００", "٣", "1.５"])  # other scripts' digits, which Decimal would read
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


def test_queue_priority_first_then_fifo():
    queue = FairQueue[str](max_size=10, max_per_user=10)
    for item, prio in [("entry-1", 3), ("stop", 1), ("entry-2", 3), ("exit", 2)]:
        queue.push("alice", item, prio)
    assert queue.drain() == ["stop", "exit", "entry-1", "entry-2"]
    assert queue.pop() is None


def test_queue_round_robin_across_users_within_a_priority():
    queue = FairQueue[str](max_size=1000, max_per_user=1000)
    for i in range(500):
        queue.push("a", f"a{i}", 3)
    for i in range(5):
        queue.push("b", f"b{i}", 3)
    queue.push("c", "c-stop", 1)
    order = queue.drain()
    assert order[0] == "c-stop"
    assert order[1:11] == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"]
    assert order[11:] == [f"a{i}" for i in range(5, 500)]


def test_queue_caps_per_user_and_overall():
    queue = FairQueue[str](max_size=4, max_per_user=2)
    queue.push("a", "a0", 3)
    queue.push("a", "a1", 3)
    with pytest.raises(QueueFull) as info:
        queue.push("a", "a2", 3)
    assert info.value.reason == "USER_QUEUE_FULL"
    queue.push("b", "b0", 3)
    queue.push("c", "c0", 3)
    with pytest.raises(QueueFull) as info:
        queue.push("d", "d0", 1)
    assert info.value.reason == "QUEUE_FULL"
    assert (len(queue), queue.depth_of("a"), queue.depth_of("d")) == (4, 2, 0)
    queue.pop()
    queue.push("d", "d0", 1)  # room again


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


def test_backoff_doubles_with_jitter_up_to_the_cap():
    import random

    from services.domain.retry import backoff

    delays = backoff(1.0, 60.0, random.Random(5))
    got = [next(delays) for _ in range(10)]
    for attempt, delay in enumerate(got):
        ceiling = min(60.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(got)) == 10  # jittered, not lock-step
