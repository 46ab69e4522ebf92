"""Rate-limit budgets: primitives by hand, profiles against the published numbers, the executor facade.

Time is always an explicit `now`. Budgets are checked by independent counters written here (a
sliding-window sum, a decaying-counter replay, a token-bucket replay), not by the code under test.
"""

import heapq
import math
import random

import pytest

from services.domain.rate_limits import (
    BackoffPolicy,
    Budget,
    DecayingCounter,
    ExchangeProfile,
    Operation,
    RateLimiter,
    Scope,
    SlidingWindow,
    TokenBucket,
    WindowLimit,
    alpaca,
    binance,
    coinbase,
    kraken,
    profile_for,
)

OPS = ("order_book", "place_order", "cancel_order", "fetch_order", "balances", "markets")

#: The published limits and per-operation costs, written out again so the profiles are checked
#: against them rather than against themselves. budget -> (scope, kind, size, period or decay).
PUBLISHED = {
    "binance": {
        "budgets": {
            "ip_weight": ("ip", "window", 6000, 60.0),
            "orders_10s": ("account", "window", 50, 10.0),
            "orders_1d": ("account", "window", 160_000, 86_400.0),
        },
        "costs": {
            "order_book": {"ip_weight": 5},
            "place_order": {"ip_weight": 1, "orders_10s": 1, "orders_1d": 1},
            "cancel_order": {"ip_weight": 1},
            "fetch_order": {"ip_weight": 4},
            "balances": {"ip_weight": 20},
            "markets": {"ip_weight": 20},
        },
    },
    "kraken": {
        "budgets": {
            "api_counter": ("account", "decay", 15, 0.33),
            "trading": ("account", "window", 60, 60.0),
            "public": ("ip", "window", 2, 2.0),
        },
        "costs": {
            "order_book": {"public": 1},
            "place_order": {"trading": 1},
            "cancel_order": {"trading": 1},
            "fetch_order": {"api_counter": 1},
            "balances": {"api_counter": 1},
            "markets": {"public": 2},
        },
    },
    "coinbase": {
        "budgets": {
            "private": ("account", "window", 30, 1.0),
            "public": ("ip", "window", 10, 1.0),
        },
        "costs": {
            "order_book": {"public": 1},
            "place_order": {"private": 1},
            "cancel_order": {"private": 1},
            "fetch_order": {"private": 1},
            "balances": {"private": 1},
            "markets": {"public": 2, "private": 1},
        },
    },
    "alpaca": {
        "budgets": {
            "account": ("account", "window", 200, 60.0),
            "market_data": ("ip", "window", 200, 60.0),
        },
        "costs": {
            "order_book": {"market_data": 1},
            "place_order": {"account": 1},
            "cancel_order": {"account": 1},
            "fetch_order": {"account": 1},
            "balances": {"account": 2},
            "markets": {"account": 1},
        },
    },
}

#: Float slack of the independent checkers: a call exactly one window after another may land a few
#: ulps either side of the window edge.
EDGE = 1e-6


# --- independent checkers ------------------------------------------------------------------


def max_window_sum(events, window_s):
    """The largest total cost in any window (u - window_s, u], over (time, cost) events."""
    events = sorted(events)
    best, total, low = 0.0, 0.0, 0
    for high, (u, cost) in enumerate(events):
        total += cost
        while events[low][0] <= u - window_s + EDGE:
            total -= events[low][1]
            low += 1
        # Only a window ending after every call at time u counts all of them.
        if high + 1 == len(events) or events[high + 1][0] > u:
            best = max(best, total)
    return best


def max_decay_level(events, decay_per_s):
    """The highest a decaying counter gets when `events` are replayed in time order."""
    level, last, best = 0.0, -math.inf, 0.0
    for t, cost in sorted(events):
        level = max(0.0, level - decay_per_s * (t - last)) + cost
        last = t
        best = max(best, level)
    return best


def min_bucket_tokens(events, capacity, refill_per_s):
    tokens, last, worst = capacity, -math.inf, capacity
    for t, cost in sorted(events):
        tokens = min(capacity, tokens + refill_per_s * (t - last)) - cost
        last = t
        worst = min(worst, tokens)
    return worst


def assert_within_published(exchange, calls):
    """Every published budget holds for `calls` = [(time, account, op)], in every window."""
    published = PUBLISHED[exchange]
    for name, (scope, kind, size, period) in published["budgets"].items():
        spent = {}  # scope key -> [(time, cost)]
        for t, account, op in calls:
            cost = published["costs"][op].get(name)
            if cost:
                spent.setdefault(account if scope == "account" else "ip", []).append((t, cost))
        assert spent, f"{exchange}: the run never used {name}"
        for key, events in spent.items():
            if kind == "window":
                assert max_window_sum(events, period) <= size + 1e-9, (exchange, name, key)
            else:
                assert max_decay_level(events, period) <= size + 1e-9, (exchange, name, key)
    if exchange == "kraken":
        # Kraken's own trading counter (starter: threshold 60, decays 1/s) never passes 60 either.
        for account in {a for _, a, _ in calls}:
            trades = [(t, 1) for t, a, op in calls if a == account and op in ("place_order", "cancel_order")]
            assert max_decay_level(trades, 1.0) <= 60 + 1e-9


# --- primitives by hand --------------------------------------------------------------------


def test_token_bucket_bursts_then_spaces_and_queues_same_instant_callers():
    bucket = TokenBucket(capacity=5, refill_per_s=1.0)
    assert [bucket.reserve(0.0) for _ in range(7)] == [0, 0, 0, 0, 0, 1.0, 2.0]
    assert bucket.tokens(0.0) == pytest.approx(-2.0)  # two tokens already promised to later callers
    assert bucket.tokens(10.0) == pytest.approx(5.0)
    assert bucket.reserve(10.0, cost=5) == 0.0
    assert bucket.reserve(10.0, cost=2) == pytest.approx(2.0)


def test_token_bucket_never_overdrawn_by_a_crowd():
    bucket = TokenBucket(capacity=10, refill_per_s=4.0)
    rng = random.Random(7)
    events = []
    now = 0.0
    for _ in range(2000):
        now += rng.choice([0.0, 0.0, 0.0, 0.1, 1.0])
        cost = rng.choice([1, 1, 2, 5])
        events.append((now + bucket.reserve(now, cost), cost))
    assert min_bucket_tokens(events, 10, 4.0) >= -1e-9


def test_sliding_window_by_hand():
    window = SlidingWindow(limit=3, window_s=10.0)
    assert [window.reserve(0.0) for _ in range(4)] == [0, 0, 0, 10.0]
    assert window.used(0.0) == 3
    # At t=5 the window (-5, 5] is full; at 10 the three calls at 0 have left and one is booked.
    assert window.reserve(5.0) == pytest.approx(5.0)
    assert window.used(10.0) == 2
    assert window.reserve(10.0) == 0.0
    assert window.reserve(10.0) == pytest.approx(10.0)


def test_sliding_window_counts_calls_booked_for_later():
    window = SlidingWindow(limit=2, window_s=10.0)
    window.record(20.0)  # another budget made some caller wait until 20
    assert window.reserve(15.0) == 0.0  # (10, 20] holds 15 and 20: full now
    # A call at 15..20 would make (u-10, u] hold three for some u; the first free moment is 25.
    assert window.reserve(15.0) == pytest.approx(10.0)
    assert max_window_sum([(20.0, 1), (15.0, 1), (25.0, 1)], 10.0) <= 2


def test_sliding_window_many_callers_same_instant():
    window = SlidingWindow(limit=50, window_s=10.0)
    waits = [window.reserve(0.0) for _ in range(500)]
    assert waits == [10.0 * (i // 50) for i in range(500)]
    assert max_window_sum([(w, 1) for w in waits], 10.0) == 50


def test_sliding_window_weighted_and_out_of_order_random():
    window = SlidingWindow(limit=20, window_s=3.0)
    rng = random.Random(11)
    events = []
    now = 0.0
    for _ in range(3000):
        now += rng.choice([0.0, 0.0, 0.05, 0.5, 2.0, 5.0])  # bursts, and pauses that let it drain
        cost = rng.choice([1, 1, 2, 5, 20])
        if rng.random() < 0.2:  # booked for later by some other budget's wait
            at = window.earliest(now, cost, not_before=now + rng.uniform(0, 5))
            window.record(at, cost)
        else:
            at = now + window.reserve(now, cost)
        assert at >= now
        events.append((at, cost))
    assert max_window_sum(events, 3.0) <= 20


def brute_force_earliest(booked, limit, window_s, start, cost):
    """The first time >= start at which a call of `cost` keeps every window within `limit`."""

    def fits(s):
        calls = booked + [(s, cost)]
        ends = [s] + [t for t, _ in booked if s < t < s + window_s]
        return all(sum(c for t, c in calls if u - window_s < t <= u) <= limit for u in ends)

    candidates = sorted({start} | {t + window_s for t, _ in booked} | {t for t, _ in booked})
    return next(s for s in candidates if s >= start and fits(s))


def test_sliding_window_waits_no_longer_than_it_must():
    rng = random.Random(3)
    for _ in range(300):
        window = SlidingWindow(limit=6, window_s=4.0)
        booked = []
        for _ in range(rng.randint(1, 12)):
            at, cost = rng.choice([0.0, 1.0, 2.5, 4.0, 6.0, 9.0]), rng.choice([1, 2, 3])
            if at + window.window_s <= 0.0 or sum(c for t, c in booked if abs(t - at) < 4.0) + cost > 6:
                continue
            window.record(at, cost)
            booked.append((at, cost))
        start, cost = rng.choice([0.0, 0.5, 2.0, 3.0]), rng.choice([1, 2, 6])
        expected = brute_force_earliest(booked, 6, 4.0, start, cost)
        assert window.earliest(0.0, cost, not_before=start) == pytest.approx(expected), (booked, start, cost)


def test_kraken_decay_arithmetic_by_hand():
    counter = DecayingCounter(max_count=15, decay_per_s=0.33)
    assert [counter.reserve(0.0) for _ in range(15)] == [0.0] * 15
    assert counter.level(0.0) == pytest.approx(15)
    # Full: the 16th waits until one unit has decayed, 1 / 0.33 = 3.0303... s.
    assert counter.reserve(0.0) == pytest.approx(1 / 0.33)
    # 16 units booked, 10 s of decay at 0.33/s: 16 - 3.3 = 12.7.
    assert counter.level(10.0) == pytest.approx(12.7)
    # A QueryOrders at 10 fits (12.7 + 1 <= 15); three more need 13.7 + 3 - 15 = 1.7 units to decay.
    assert counter.reserve(10.0) == 0.0
    assert counter.reserve(10.0) == 0.0
    assert counter.reserve(10.0) == pytest.approx((14.7 + 1 - 15) / 0.33)
    # It never goes below zero: long idle, then one call is one unit.
    assert counter.level(1000.0) == 0.0
    counter.reserve(1000.0)
    assert counter.level(1000.0) == pytest.approx(1.0)
    assert counter.level(1000.0 + 1 / 0.33) == pytest.approx(0.0, abs=1e-9)


def test_penalize_blocks_each_primitive():
    for limiter in (TokenBucket(5, 1.0), SlidingWindow(5, 1.0), DecayingCounter(5, 1.0)):
        limiter.penalize(10.0, 3.5)
        assert limiter.reserve(10.0) == pytest.approx(3.5)
        assert limiter.reserve(14.0) == 0.0
        with pytest.raises(ValueError):
            limiter.penalize(10.0, -1.0)


@pytest.mark.parametrize(
    "make", [lambda: TokenBucket(5, 1.0), lambda: SlidingWindow(5, 1.0), lambda: DecayingCounter(5, 1.0)]
)
def test_costs_that_could_never_go_are_refused(make):
    limiter = make()
    with pytest.raises(ValueError):
        limiter.reserve(0.0, cost=6)
    with pytest.raises(ValueError):
        limiter.reserve(0.0, cost=-1)
    assert limiter.reserve(0.0, cost=0) == 0.0


def test_bad_limiter_parameters_fail_fast():
    for bad in (
        lambda: TokenBucket(0, 1),
        lambda: TokenBucket(1, 0),
        lambda: SlidingWindow(1, 0),
        lambda: DecayingCounter(-1, 1),
        lambda: SlidingWindow(math.inf, 1),
    ):
        with pytest.raises(ValueError):
            bad()


# --- profiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", sorted(PUBLISHED))
def test_profiles_match_the_published_numbers(exchange):
    profile = profile_for(exchange)
    published = PUBLISHED[exchange]
    assert {b.name for b in profile.budgets} == set(published["budgets"])
    for name, (scope, kind, size, period) in published["budgets"].items():
        budget = profile.budget(name)
        assert budget.scope == scope
        assert budget.source  # every number says where it comes from
        limiter = budget.limit.new()
        if kind == "window":
            assert isinstance(limiter, SlidingWindow)
            assert (limiter.limit, limiter.window_s) == (size, period)
        else:
            assert isinstance(limiter, DecayingCounter)
            assert (limiter.max_count, limiter.decay_per_s) == (size, period)
    assert {op: dict(c) for op, c in profile.costs.items()} == published["costs"]


def test_profiles_are_fresh_every_call():
    a, b = binance(), binance()
    limiter_a = a.new_limiters(Scope.IP)["ip_weight"]
    limiter_a.reserve(0.0, cost=6000)
    assert b.new_limiters(Scope.IP)["ip_weight"].reserve(0.0, cost=6000) == 0.0
    assert a.new_limiters(Scope.IP)["ip_weight"] is not limiter_a


def test_kraken_tiers():
    intermediate = kraken("intermediate").budget("api_counter").limit
    assert (intermediate.max_count, intermediate.decay_per_s) == (20, 0.5)
    pro = kraken("pro")
    assert (pro.budget("api_counter").limit.max_count, pro.budget("api_counter").limit.decay_per_s) == (
        20,
        1.0,
    )
    assert pro.budget("trading").limit == WindowLimit(180, 48.0)  # threshold 180 at 3.75/s
    with pytest.raises(ValueError):
        kraken("whale")
    with pytest.raises(ValueError):
        profile_for("ftx")


def test_profile_validation():
    window = Budget("w", Scope.ACCOUNT, WindowLimit(5, 1.0), "test")
    every_op = {op: {"w": 1} for op in Operation}
    ExchangeProfile("x", (window,), every_op)
    with pytest.raises(ValueError, match="no cost"):
        ExchangeProfile("x", (window,), {Operation.PLACE_ORDER: {"w": 1}})
    with pytest.raises(ValueError, match="unknown budget"):
        ExchangeProfile("x", (window,), {**every_op, Operation.MARKETS: {"nope": 1}})
    with pytest.raises(ValueError, match="holds"):
        ExchangeProfile("x", (window,), {**every_op, Operation.MARKETS: {"w": 6}})
    with pytest.raises(ValueError, match="unique"):
        ExchangeProfile("x", (window, window), every_op)


# --- the facade ----------------------------------------------------------------------------

# (profile, per-account orders that go at once, the next one's wait)
ORDER_BURSTS = [(binance, 50, 10.0), (kraken, 60, 60.0), (coinbase, 30, 1.0), (alpaca, 200, 60.0)]


@pytest.mark.parametrize(("make", "burst", "next_wait"), ORDER_BURSTS)
def test_accounts_proceed_in_parallel(make, burst, next_wait):
    limiter = RateLimiter(make())
    assert [limiter.reserve(0.0, "alice", "place_order") for _ in range(burst)] == [0.0] * burst
    assert limiter.reserve(0.0, "alice", "place_order") == pytest.approx(next_wait)
    # Alice is out of order budget; Bob's first order still goes now.
    assert limiter.reserve(0.0, "bob", "place_order") == 0.0
    assert limiter.reserve(0.0, "bob", "cancel_order") == 0.0


def test_a_deep_queue_for_one_account_does_not_delay_another():
    limiter = RateLimiter(binance())
    waits = [limiter.reserve(0.0, "alice", "place_order") for _ in range(1000)]
    assert waits[-1] == pytest.approx(190.0)  # 50 per 10 s: the 1000th goes at 190 s
    # Alice's orders are booked on the shared IP weight too, but 1 weight each leaves plenty.
    assert limiter.reserve(0.0, "bob", "place_order") == 0.0
    assert limiter.reserve(0.0, "bob", "balances") == 0.0


def test_a_wait_for_one_budget_is_checked_against_later_bookings_of_another():
    limiter = RateLimiter(binance())
    for _ in range(50):
        assert limiter.reserve(0.0, "alice", "place_order") == 0.0  # Alice's next order: t=10
    limiter.penalize(0.0, "bob", 60.0)
    for _ in range(300):
        assert limiter.reserve(0.0, "bob", "balances") == 60.0  # 6000 weight, all booked for t=60
    # At 10 Alice's order fits her own budget, but (0, 60] already holds Bob's 6000 weight, and so
    # does every window holding 60 until it ends at 120.
    assert limiter.reserve(0.0, "alice", "place_order") == pytest.approx(120.0)


# (profile, account A's calls that fill the IP budget, then B's op and its wait)
IP_FILLERS = [
    (binance, [("balances", 300)], "order_book", 60.0),  # 300 * 20 = 6000 weight
    (kraken, [("order_book", 2)], "order_book", 2.0),
    (coinbase, [("order_book", 10)], "order_book", 1.0),
    (alpaca, [("order_book", 200)], "order_book", 60.0),
]


@pytest.mark.parametrize(("make", "fill", "op", "wait"), IP_FILLERS)
def test_the_ip_budget_is_shared(make, fill, op, wait):
    limiter = RateLimiter(make())
    for filler, count in fill:
        assert all(limiter.reserve(0.0, "alice", filler) == 0.0 for _ in range(count))
    assert limiter.reserve(0.0, "bob", op) == pytest.approx(wait)


def test_kraken_call_counter_is_per_account():
    limiter = RateLimiter(kraken())
    assert [limiter.reserve(0.0, "alice", "fetch_order") for _ in range(15)] == [0.0] * 15
    assert limiter.reserve(0.0, "alice", "balances") == pytest.approx(1 / 0.33)
    assert limiter.reserve(0.0, "bob", "balances") == 0.0
    # Orders are not on the call counter: Alice can still trade at once.
    assert limiter.reserve(0.0, "alice", "place_order") == 0.0


def test_binance_markets_and_balances_spend_ip_weight_only():
    limiter = RateLimiter(binance())
    for _ in range(150):
        limiter.reserve(0.0, "alice", "markets")  # 3000 weight
    for _ in range(150):
        limiter.reserve(0.0, "bob", "balances")  # 3000 weight
    assert limiter.reserve(0.0, "carol", "cancel_order") == pytest.approx(60.0)
    assert limiter.reserve(60.0, "alice", "fetch_order") == pytest.approx(0.0)


def test_429_pauses_only_that_account_and_grows_on_repeats():
    limiter = RateLimiter(coinbase())
    assert limiter.penalize(0.0, "alice", 2.0) == 2.0
    assert limiter.reserve(0.0, "alice", "place_order") == 2.0
    assert limiter.reserve(0.0, "bob", "place_order") == 0.0
    # Consecutive 429s double the pause, capped at 60 s.
    pauses = [limiter.penalize(t, "alice", 2.0) for t in (3.0, 8.0, 17.0, 34.0, 67.0, 128.0)]
    assert pauses == [4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert limiter.blocked_until("alice") == pytest.approx(188.0)
    assert limiter.reserve(130.0, "alice", "fetch_order") == pytest.approx(58.0)
    assert limiter.reserve(130.0, "bob", "fetch_order") == 0.0
    # A success starts over.
    limiter.succeeded(190.0, "alice")
    assert limiter.penalize(191.0, "alice", 2.0) == 2.0


def test_429_streak_ends_after_a_quiet_window():
    limiter = RateLimiter(alpaca(), BackoffPolicy(min_s=1.0, cap_s=60.0, streak_window_s=60.0))
    assert limiter.penalize(0.0, "alice", None) == 1.0  # no Retry-After: the minimum
    assert limiter.penalize(1.0, "alice", None) == 2.0
    assert limiter.penalize(100.0, "alice", None) == 1.0  # more than 60 s since the last 429


def test_retry_after_beyond_the_cap_is_honoured():
    limiter = RateLimiter(binance())
    assert limiter.penalize(0.0, None, 120.0) == 120.0  # e.g. a 418 ban's Retry-After
    assert limiter.penalize(1.0, None, 1.0) == 60.0  # second in the streak: doubled, capped
    assert limiter.blocked_until(None) == pytest.approx(120.0)


def test_ip_wide_429_pauses_every_account():
    limiter = RateLimiter(binance())
    limiter.penalize(0.0, None, 5.0)
    assert limiter.reserve(0.0, "alice", "order_book") == 5.0
    assert limiter.reserve(1.0, "bob", "place_order") == 4.0
    assert limiter.reserve(1.0, "carol-first-seen", "balances") == 4.0
    limiter.succeeded(6.0, "alice")
    assert limiter.penalize(7.0, None, 5.0) == 5.0  # the IP streak ended with that success


def test_reservations_during_a_pause_queue_after_it():
    limiter = RateLimiter(coinbase())
    limiter.penalize(0.0, "alice", 2.0)
    waits = [limiter.reserve(0.0, "alice", "place_order") for _ in range(31)]
    assert waits == [2.0] * 30 + [3.0]


def test_facade_rejects_unknown_operations_and_accounts():
    limiter = RateLimiter(kraken())
    with pytest.raises(ValueError):
        limiter.reserve(0.0, "alice", "withdraw")
    with pytest.raises(ValueError):
        limiter.reserve(0.0, "", "place_order")
    with pytest.raises(ValueError):
        limiter.penalize(0.0, "alice", -1.0)
    assert limiter.reserve(0.0, "alice", Operation.PLACE_ORDER) == 0.0
    assert limiter.accounts == ("alice",)


# --- long simulated runs -------------------------------------------------------------------

#: Operation mixes that press on every budget of each exchange.
MIXES = {
    "binance": (20, 45, 10, 10, 10, 5),
    "kraken": (10, 35, 20, 20, 10, 5),
    "coinbase": (30, 30, 10, 20, 5, 5),
    "alpaca": (20, 40, 10, 15, 10, 5),
}


def simulate(exchange, reservations=10_000, accounts=4, clients_per_account=3, seed=1):
    """Clients that each reserve, wait exactly what they were told, call, think, and go again."""
    limiter = RateLimiter(profile_for(exchange))
    rng = random.Random(seed)
    clients = accounts * clients_per_account
    ready = [(0.0, client) for client in range(clients)]  # everyone starts at the same instant
    calls = []
    while len(calls) < reservations:
        now, client = heapq.heappop(ready)
        account = f"acct-{client % accounts}"
        op = rng.choices(OPS, weights=MIXES[exchange])[0]
        wait = limiter.reserve(now, account, op)
        assert wait >= 0.0
        calls.append((now + wait, account, op))
        think = rng.choice([0.0, 0.0, 0.0, 0.01, 0.25, 3.0])
        # Whole hundredths, so many clients come back at the very same instant.
        heapq.heappush(ready, (math.ceil((now + wait + think) * 100) / 100, client))
    return calls


@pytest.mark.parametrize("exchange", sorted(PUBLISHED))
def test_long_run_never_exceeds_any_budget(exchange):
    calls = simulate(exchange)
    assert len(calls) == 10_000
    assert {a for _, a, _ in calls} == {f"acct-{i}" for i in range(4)}
    assert_within_published(exchange, calls)
    # The budgets were actually pressed: someone had to wait.
    assert max(t for t, _, _ in calls) > 60.0


def test_long_run_with_random_429s_still_within_budget():
    limiter = RateLimiter(kraken())
    rng = random.Random(5)
    calls = []
    now = 0.0
    for _ in range(3000):
        now += rng.choice([0.0, 0.0, 0.05, 0.5])
        account = rng.choice(["a", "b", "c"])
        op = rng.choice(OPS)
        go = now + limiter.reserve(now, account, op)
        calls.append((go, account, op))
        if rng.random() < 0.02:
            limiter.penalize(go, rng.choice([account, None]), rng.choice([None, 0.5, 3.0]))
        elif rng.random() < 0.2:
            limiter.succeeded(go, account)
    assert_within_published("kraken", calls)
