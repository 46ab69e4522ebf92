"""Rate-limit budgets that match each exchange's published limits (the executor owns them).

Pure code: no I/O, no asyncio, no clock of its own. Every call takes `now`, a float of seconds on
whatever monotonic clock the caller uses, and answers how many seconds the caller must wait before
the request may go. A reservation is recorded at the moment it will go, so callers that reserve at
the same instant queue behind each other and the budget is never overdrawn.

Three primitives, each with `reserve(now, cost) -> wait`, `penalize(now, retry_after_s)`, and the
two halves of `reserve` (`earliest`, `record`) for callers that must satisfy several at once:

- `TokenBucket`: `capacity` tokens, refilled at `refill_per_s`.
- `SlidingWindow`: at most `limit` cost in any window of `window_s` seconds. Stricter than a venue's
  fixed (calendar) window, so it never trips one.
- `DecayingCounter`: Kraken's call counter: each call adds its cost, the counter decays by
  `decay_per_s`, a call that would take it over `max_count` waits. (It is a token bucket seen from
  the other side; both run on the same arithmetic, GCRA.)

Exchange profiles (`binance()`, `kraken()`, `coinbase()`, `alpaca()`) list each exchange's budgets,
whether each is per account (API key) or per executor (IP), where each number comes from, and what
each operation costs against each budget. `RateLimiter(profile)` is what an executor holds: it keeps
one set of per-account budgets for every account (created on first use) and one shared per-IP set,
and turns a venue's 429 into a per-account (or whole-IP) pause that grows on repeats.
"""

from __future__ import annotations

import abc
import enum
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# ---------------------------------------------------------------------------------------------
# Primitives
# ---------------------------------------------------------------------------------------------


class Limiter(abc.ABC):
    """A budget that answers "when may a call of this cost go?" and records calls once decided."""

    def __init__(self, capacity: float) -> None:
        if not capacity > 0 or math.isinf(capacity):
            raise ValueError(f"capacity must be a positive finite number, not {capacity!r}")
        self.capacity = float(capacity)
        # The latest `now` seen. Time never runs backwards here: a stale `now` is read as this.
        self._clock = -math.inf
        self._blocked_until = -math.inf

    def reserve(self, now: float, cost: float = 1.0) -> float:
        """Seconds to wait before a call of `cost` may go (0.0: now), and book it at that time."""
        at = self.earliest(now, cost)
        self.record(at, cost)
        return at - now

    def earliest(self, now: float, cost: float = 1.0, not_before: float = -math.inf) -> float:
        """The earliest time, not before `now` or `not_before`, at which `cost` fits. Books nothing."""
        self._check_cost(cost)
        self._clock = max(self._clock, now)
        return self._earliest(max(now, self._clock, not_before, self._blocked_until), cost)

    @abc.abstractmethod
    def record(self, at: float, cost: float = 1.0) -> None:
        """Book a call of `cost` at `at`, a time `earliest` returned (for this or a later caller)."""

    def penalize(self, now: float, retry_after_s: float) -> None:
        """The venue said 429: nothing goes before `now + retry_after_s`."""
        if not retry_after_s >= 0:
            raise ValueError(f"retry_after_s must be >= 0, not {retry_after_s!r}")
        self._blocked_until = max(self._blocked_until, now + retry_after_s)

    @property
    def blocked_until(self) -> float:
        return self._blocked_until

    @abc.abstractmethod
    def _earliest(self, start: float, cost: float) -> float: ...

    def _check_cost(self, cost: float) -> None:
        if not 0 <= cost <= self.capacity:
            raise ValueError(f"cost {cost!r} outside 0..{self.capacity:g}: it could never go")


class _Gcra(Limiter):
    """Generic cell rate algorithm on one number, the time the booked cost has drained away.

    That time is kept as `_since + _level / rate`: `_level` only adds costs until the bucket drains,
    so whole-number costs stay exact and a full bucket answers exactly, not a few ulps late. Each
    booked call pushes that time on by cost/rate from wherever it stands, also when calls are booked
    out of time order (one account's call booked for later, then another account's earlier one),
    which keeps the guarantee: the cost booked in any interval [a, b] is at most
    capacity + rate * (b - a).
    """

    def __init__(self, capacity: float, rate_per_s: float) -> None:
        super().__init__(capacity)
        if not rate_per_s > 0 or math.isinf(rate_per_s):
            raise ValueError(f"rate must be a positive finite number, not {rate_per_s!r}")
        self.rate_per_s = float(rate_per_s)
        self._since = -math.inf
        self._level = 0.0

    def _earliest(self, start: float, cost: float) -> float:
        return max(start, self._since + (self._level + cost - self.capacity) / self.rate_per_s)

    def record(self, at: float, cost: float = 1.0) -> None:
        self._check_cost(cost)
        if self._used(at) <= 0:  # drained by `at`: start over from there
            self._since, self._level = at, 0.0
        self._level += cost

    def _used(self, now: float) -> float:
        if self._since == -math.inf:
            return 0.0
        return max(0.0, self._level - (now - self._since) * self.rate_per_s)


class TokenBucket(_Gcra):
    """`capacity` tokens, refilled continuously at `refill_per_s`; a call takes `cost` tokens."""

    def __init__(self, capacity: float, refill_per_s: float) -> None:
        super().__init__(capacity, refill_per_s)

    @property
    def refill_per_s(self) -> float:
        return self.rate_per_s

    def tokens(self, now: float) -> float:
        """Tokens left at `now`, counting every call booked so far (also those booked for later)."""
        return self.capacity - self._used(now)


class KeyedBuckets:
    """A TokenBucket per key, made on first use, for a server counting its callers (an exchange
    emulator per key or IP, the webhook gateway per strategy): a request goes now, its cost
    taken, or is told how long until it could."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[object, TokenBucket] = {}

    def take(self, key: object, capacity: float, refill_per_s: float, cost: float = 1.0) -> float:
        """0.0 when the request may go ahead (its cost is taken); else the seconds until it could."""
        if cost > capacity:
            return math.inf
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(capacity, refill_per_s)
        now = self._clock()
        at = bucket.earliest(now, cost)
        if at > now:
            return at - now
        bucket.record(now, cost)
        return 0.0


class DecayingCounter(_Gcra):
    """Kraken's call counter: += cost per call, -= `decay_per_s` per second, never above `max_count`."""

    def __init__(self, max_count: float, decay_per_s: float) -> None:
        super().__init__(max_count, decay_per_s)

    @property
    def max_count(self) -> float:
        return self.capacity

    @property
    def decay_per_s(self) -> float:
        return self.rate_per_s

    def level(self, now: float) -> float:
        """The counter at `now`, counting every call booked so far (also those booked for later)."""
        return self._used(now)


class SlidingWindow(Limiter):
    """At most `limit` cost in any window (u - window_s, u]: a log of booked calls.

    A call booked for later (another budget made it wait) stays in the log at that later time, so an
    earlier call booked afterwards is checked against every window it shares with it.
    """

    def __init__(self, limit: float, window_s: float) -> None:
        super().__init__(limit)
        if not window_s > 0 or math.isinf(window_s):
            raise ValueError(f"window_s must be a positive finite number, not {window_s!r}")
        self.window_s = float(window_s)
        self._times: list[float] = []  # booked calls, in time order
        self._cum: list[float] = [0.0]  # _cum[i]: cost of the first i calls, so sums are differences
        self._live = 0  # calls before this index have left every window that can still matter

    @property
    def limit(self) -> float:
        return self.capacity

    def used(self, now: float) -> float:
        """Cost booked in the window ending at `now` (not counting calls booked for later)."""
        self._clock = max(self._clock, now)
        self._forget_expired()
        return self._in_window(self._clock)

    def record(self, at: float, cost: float = 1.0) -> None:
        self._check_cost(cost)
        index = bisect_right(self._times, at, lo=self._live)
        self._times.insert(index, at)
        cum = self._cum
        cum.insert(index + 1, cum[index] + cost)
        for i in range(index + 2, len(cum)):  # only calls booked later than this one: usually none
            cum[i] += cost

    def _expiry(self, time: float) -> float:
        return time + self.window_s

    def _first_live_at(self, u: float) -> int:
        """Index of the first call still inside the window ending at `u` (time + window > u)."""
        return bisect_right(self._times, u, lo=self._live, key=self._expiry)

    def _in_window(self, u: float) -> float:
        first = self._first_live_at(u)
        return self._cum[bisect_right(self._times, u, lo=first)] - self._cum[first]

    def _forget_expired(self) -> None:
        self._live = self._first_live_at(self._clock)
        if self._live > 1024 and 2 * self._live > len(self._times):
            del self._times[: self._live]
            base = self._cum[self._live]
            self._cum = [c - base for c in self._cum[self._live :]]
            self._live = 0

    def _earliest(self, start: float, cost: float) -> float:
        self._forget_expired()
        times, cum, limit = self._times, self._cum, self.capacity
        at = start
        while True:
            # 1. The window ending at `at`: wait for the oldest calls in it to leave.
            first = self._first_live_at(at)
            end = bisect_right(times, at, lo=first)
            excess = cum[end] - cum[first] + cost - limit
            if excess > 0:
                leaving = bisect_left(cum, cum[first] + excess, lo=first + 1, hi=end)
                at = times[leaving - 1] + self.window_s
                continue
            # 2. Windows ending at calls booked for later that a call at `at` would also fall in.
            later = bisect_left(times, at + self.window_s, lo=end)
            if cum[later] - cum[first] + cost <= limit:
                return at  # even every call within a window of `at` together leaves room
            worst = -1
            for m in range(end, later):
                if self._in_window(times[m]) + cost > limit:
                    worst = m
            if worst < 0:
                return at
            at = times[worst]  # not at or before it within a window; step 1 moves past it


# ---------------------------------------------------------------------------------------------
# Exchange profiles
# ---------------------------------------------------------------------------------------------


class Operation(enum.StrEnum):
    """What an executor asks a venue for; each costs something against the venue's budgets."""

    ORDER_BOOK = "order_book"
    PLACE_ORDER = "place_order"
    CANCEL_ORDER = "cancel_order"
    FETCH_ORDER = "fetch_order"
    BALANCES = "balances"
    MARKETS = "markets"


class Scope(enum.StrEnum):
    ACCOUNT = "account"  # one budget per API key / account: one user never drains another's
    IP = "ip"  # one budget per executor (its egress IP), shared by every account it serves


@dataclass(frozen=True)
class BucketLimit:
    capacity: float
    refill_per_s: float

    def new(self) -> TokenBucket:
        return TokenBucket(self.capacity, self.refill_per_s)


@dataclass(frozen=True)
class WindowLimit:
    limit: float
    window_s: float

    def new(self) -> SlidingWindow:
        return SlidingWindow(self.limit, self.window_s)


@dataclass(frozen=True)
class DecayLimit:
    max_count: float
    decay_per_s: float

    def new(self) -> DecayingCounter:
        return DecayingCounter(self.max_count, self.decay_per_s)


@dataclass(frozen=True)
class Budget:
    name: str
    scope: Scope
    limit: BucketLimit | WindowLimit | DecayLimit
    source: str  # where the number comes from

    @property
    def capacity(self) -> float:
        match self.limit:
            case BucketLimit(capacity=c) | WindowLimit(limit=c) | DecayLimit(max_count=c):
                return c
        raise TypeError(f"unknown limit {self.limit!r}")


@dataclass(frozen=True)
class ExchangeProfile:
    """An exchange's budgets and the cost of each operation against them (`costs[op][budget]`)."""

    exchange: str
    budgets: tuple[Budget, ...]
    costs: Mapping[Operation, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by_name = {b.name: b for b in self.budgets}
        if len(by_name) != len(self.budgets):
            raise ValueError(f"{self.exchange}: budget names must be unique")
        missing = set(Operation) - set(self.costs)
        if missing:
            raise ValueError(f"{self.exchange}: no cost for {sorted(missing)}")
        for op, charges in self.costs.items():
            Operation(op)
            for name, cost in charges.items():
                if name not in by_name:
                    raise ValueError(f"{self.exchange}: {op} charges unknown budget {name!r}")
                if not 0 <= cost <= by_name[name].capacity:
                    holds = by_name[name].capacity
                    raise ValueError(f"{self.exchange}: {op} costs {cost} of {name}, which holds {holds}")
        frozen = {Operation(op): MappingProxyType(dict(c)) for op, c in self.costs.items()}
        object.__setattr__(self, "costs", MappingProxyType(frozen))

    def budget(self, name: str) -> Budget:
        for b in self.budgets:
            if b.name == name:
                return b
        raise KeyError(name)

    def new_limiters(self, scope: Scope) -> dict[str, Limiter]:
        """A fresh, empty limiter for every budget of `scope`, by budget name."""
        return {b.name: b.limit.new() for b in self.budgets if b.scope is scope}


def binance() -> ExchangeProfile:
    """Binance spot. Binance counts per fixed interval; our sliding windows are stricter than that."""
    limits_doc = "developers.binance.com/docs/binance-spot-api-docs/rest-api/limits"
    info_doc = "GET /api/v3/exchangeInfo rateLimits"
    return ExchangeProfile(
        exchange="binance",
        budgets=(
            # Every request, signed or not, spends the IP's weight. ccxt prices 1 weight as cost 0.2
            # at rateLimit 50 ms: the same 6000/min (EXCHANGES.md). RAW_REQUESTS (61,000 per 5 min)
            # cannot bind: every request weighs at least 1, so 6000/min is at most 30,000 per 5 min.
            Budget(
                "ip_weight",
                Scope.IP,
                WindowLimit(6000, 60.0),
                f"REQUEST_WEIGHT 6000/MINUTE per IP ({info_doc}; {limits_doc})",
            ),
            # New orders are counted per account (X-MBX-ORDER-COUNT-10S / -1D); cancels are not.
            Budget(
                "orders_10s",
                Scope.ACCOUNT,
                WindowLimit(50, 10.0),
                f"ORDERS 50 per 10 SECOND per account ({info_doc})",
            ),
            Budget(
                "orders_1d",
                Scope.ACCOUNT,
                WindowLimit(160_000, 86_400.0),
                f"ORDERS 160,000 per DAY per account ({info_doc})",
            ),
        ),
        costs={
            # Weights from the endpoint pages: depth limit 1-100 weighs 5 (ccxt sends no limit; Binance's
            # default is 100), POST/DELETE order 1, GET order 4, GET account 20, exchangeInfo 20.
            Operation.ORDER_BOOK: {"ip_weight": 5},
            Operation.PLACE_ORDER: {"ip_weight": 1, "orders_10s": 1, "orders_1d": 1},
            Operation.CANCEL_ORDER: {"ip_weight": 1},
            Operation.FETCH_ORDER: {"ip_weight": 4},
            Operation.BALANCES: {"ip_weight": 20},
            Operation.MARKETS: {"ip_weight": 20},  # spot-only load_markets: exchangeInfo alone
        },
    )


#: Kraken tiers: (REST call counter max, its decay per second, trading counter threshold, its decay).
KRAKEN_TIERS: Mapping[str, tuple[float, float, float, float]] = MappingProxyType(
    {
        "starter": (15, 0.33, 60, 1.0),
        "intermediate": (20, 0.5, 125, 2.34),
        "pro": (20, 1.0, 180, 3.75),
    }
)


def kraken(tier: str = "starter") -> ExchangeProfile:
    """Kraken spot, for an account of `tier` (starter unless the operator knows better).

    Reading of the docs: the REST call counter is per API key; ledger/trade-history calls add 2,
    every other private call 1, AddOrder/CancelOrder 0 (they have their own limiter). So QueryOrders
    (fetch_order) and BalanceEx (balances) cost 1 each. ccxt encodes the same thing in its own units:
    cost 3 at rateLimit 1000 ms is one counter unit at 0.33/s. The starter tier's maximum is 15 in
    the published table (20 is the intermediate and pro maximum).
    """
    try:
        counter_max, counter_decay, trading_threshold, trading_decay = KRAKEN_TIERS[tier]
    except KeyError:
        raise ValueError(f"unknown Kraken tier {tier!r}; one of {sorted(KRAKEN_TIERS)}") from None
    rest_doc = "docs.kraken.com/api/docs/guides/spot-rest-ratelimits"
    trading_doc = "docs.kraken.com/api/docs/guides/spot-ratelimits; support.kraken.com 360045239571"
    return ExchangeProfile(
        exchange="kraken",
        budgets=(
            Budget(
                "api_counter",
                Scope.ACCOUNT,
                DecayLimit(counter_max, counter_decay),
                f"REST call counter, {tier}: max {counter_max}, decays {counter_decay}/s per API key"
                f" ({rest_doc})",
            ),
            # The trading engine keeps a counter per pair (threshold and decay by tier); AddOrder adds
            # 1, CancelOrder 1 plus a penalty for orders younger than 300 s (up to +8 under 5 s). We
            # approximate it per account, across pairs, as `threshold` calls per threshold/decay
            # seconds (60 per minute for starter): stricter than per pair, and a window of N calls per
            # N/R seconds can never push an N-max, R-decay counter past N. The age penalty on quick
            # cancels is not modelled; the executor cancels only orders that rested for its limit timeout.
            Budget(
                "trading",
                Scope.ACCOUNT,
                WindowLimit(trading_threshold, trading_threshold / trading_decay),
                f"trading rate counter, {tier}: threshold {trading_threshold}, decays {trading_decay}/s"
                f" per pair ({trading_doc})",
            ),
            # Public calls are limited per IP; Kraken support: "calling the public endpoints at a
            # frequency of 1 per second (or less) would remain within the rate limits" (ccxt: 1 req/s).
            # Two per two seconds keeps that average and lets load_markets' two calls through.
            Budget("public", Scope.IP, WindowLimit(2, 2.0), "~1 req/s per IP (support.kraken.com 206548367)"),
        ),
        costs={
            Operation.ORDER_BOOK: {"public": 1},  # GET /0/public/Depth
            Operation.PLACE_ORDER: {"trading": 1},  # AddOrder: not on the call counter
            Operation.CANCEL_ORDER: {"trading": 1},  # CancelOrder: not on the call counter
            Operation.FETCH_ORDER: {"api_counter": 1},  # QueryOrders
            Operation.BALANCES: {"api_counter": 1},  # BalanceEx
            Operation.MARKETS: {"public": 2},  # Assets + AssetPairs
        },
    )


def coinbase() -> ExchangeProfile:
    """Coinbase Advanced Trade (v3 API)."""
    doc = "docs.cdp.coinbase.com/advanced-trade/docs/rest-api-rate-limits"
    return ExchangeProfile(
        exchange="coinbase",
        budgets=(
            # Read strictly as "at most N in any second", which also satisfies a token-bucket reading.
            # ccxt's comment on its coinbase class gives the same two numbers (EXCHANGES.md).
            Budget("private", Scope.ACCOUNT, WindowLimit(30, 1.0), f"private 30 req/s per API key ({doc})"),
            Budget("public", Scope.IP, WindowLimit(10, 1.0), f"public 10 req/s per IP ({doc})"),
        ),
        costs={
            Operation.ORDER_BOOK: {"public": 1},  # GET market/product_book
            Operation.PLACE_ORDER: {"private": 1},  # POST orders
            Operation.CANCEL_ORDER: {"private": 1},  # POST orders/batch_cancel
            Operation.FETCH_ORDER: {"private": 1},  # GET orders/historical/{id}
            # GET /api/v3/brokerage/accounts (ccxt with {'v3': True}). ccxt's default is the v2
            # Coinbase App endpoint, limited separately at 10,000/h per key.
            Operation.BALANCES: {"private": 1},
            # With fetchCurrencies off: market/products, market/products?product_type=FUTURE, and the
            # signed transaction_summary.
            Operation.MARKETS: {"public": 2, "private": 1},
        },
    )


def alpaca() -> ExchangeProfile:
    """Alpaca crypto. ccxt's own pacing (3 req/s) is stricter still when it is switched on."""
    doc = "docs.alpaca.markets/docs/api-rate-limits"
    return ExchangeProfile(
        exchange="alpaca",
        budgets=(
            Budget("account", Scope.ACCOUNT, WindowLimit(200, 60.0), f"200 req/min per account ({doc})"),
            # ccxt fetches the crypto book from the data API unauthenticated, so no account is charged
            # for it: budget it per IP at the Basic market-data plan's 200/min.
            Budget("market_data", Scope.IP, WindowLimit(200, 60.0), f"data API 200 req/min, Basic ({doc})"),
        ),
        costs={
            Operation.ORDER_BOOK: {"market_data": 1},  # GET v1beta3/crypto/us/latest/orderbooks
            Operation.PLACE_ORDER: {"account": 1},  # POST /v2/orders
            Operation.CANCEL_ORDER: {"account": 1},  # DELETE /v2/orders/{id}
            Operation.FETCH_ORDER: {"account": 1},  # GET /v2/orders/{id}
            Operation.BALANCES: {"account": 2},  # GET /v2/account + GET /v2/positions
            Operation.MARKETS: {"account": 1},  # GET /v2/assets
        },
    )


PROFILES = MappingProxyType({"binance": binance, "kraken": kraken, "coinbase": coinbase, "alpaca": alpaca})


def with_follow_ups(profile: ExchangeProfile, extra: Mapping[str, Mapping[str, float]]) -> ExchangeProfile:
    """`profile` with more cost per operation: what a venue spends beyond the operation's own
    request (the live venues read an order's state and fills back with further requests)."""
    costs = {op: dict(charges) for op, charges in profile.costs.items()}
    for op, charges in extra.items():
        for name, cost in charges.items():
            costs[Operation(op)][name] = costs[Operation(op)].get(name, 0) + cost
    return ExchangeProfile(profile.exchange, profile.budgets, costs)


def profile_for(exchange: str) -> ExchangeProfile:
    try:
        return PROFILES[exchange]()
    except KeyError:
        raise ValueError(f"no rate-limit profile for {exchange!r}; one of {sorted(PROFILES)}") from None


# ---------------------------------------------------------------------------------------------
# The executor's facade
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackoffPolicy:
    """How a 429 turns into a pause (the venue's Retry-After is always honoured in full).

    The first 429 pauses for Retry-After (at least `min_s`); each further 429 that comes within
    `streak_window_s` of the end of the previous pause doubles that pause, up to `cap_s`. A success,
    or `streak_window_s` of quiet after a pause, starts over.
    """

    min_s: float = 1.0
    cap_s: float = 60.0
    streak_window_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_s <= self.cap_s or not self.streak_window_s >= 0:
            raise ValueError(f"need 0 <= min_s <= cap_s and streak_window_s >= 0: {self}")


class _Backoff:
    def __init__(self) -> None:
        self.blocked_until = -math.inf
        self.streak = 0
        self._last_pause = 0.0

    def penalize(self, now: float, retry_after_s: float, policy: BackoffPolicy) -> float:
        if now - self.blocked_until > policy.streak_window_s:
            self.streak = 0
        self.streak += 1
        asked = max(retry_after_s, policy.min_s)
        grown = asked if self.streak == 1 else max(asked, 2 * self._last_pause)
        pause = max(retry_after_s, min(policy.cap_s, grown))
        self._last_pause = pause
        self.blocked_until = max(self.blocked_until, now + pause)
        return pause

    def reset(self) -> None:
        self.streak = 0
        self._last_pause = 0.0


class _Budgets:
    def __init__(self, limiters: dict[str, Limiter]) -> None:
        self.limiters = limiters
        self.backoff = _Backoff()


class RateLimiter:
    """The rate-limit budgets of one executor (one exchange, one egress IP, many accounts).

    `reserve` answers how long to wait before the operation may go and books it for then; call the
    venue after that wait, not before. Each account's budgets are its own, so one account running
    dry never delays another except through the budgets the exchange itself shares per IP.
    """

    def __init__(self, profile: ExchangeProfile, backoff: BackoffPolicy | None = None) -> None:
        self.profile = profile
        self.backoff = backoff or BackoffPolicy()
        self._ip = _Budgets(profile.new_limiters(Scope.IP))
        self._accounts: dict[str, _Budgets] = {}

    def reserve(self, now: float, account: str, operation: str) -> float:
        """Seconds `account` must wait before `operation` may go (0.0: now); the call is booked."""
        charges, at = self._earliest(now, account, operation)
        for limiter, cost in charges:
            limiter.record(at, cost)
        return at - now

    def wait_for(self, now: float, account: str, operation: str) -> float:
        """Seconds until `operation` could go for `account`, booking nothing."""
        return self._earliest(now, account, operation)[1] - now

    def try_reserve(self, now: float, account: str, operation: str) -> bool:
        """Book the call only if it may go right now (background work that must not queue ahead
        of orders); False, and nothing booked, otherwise."""
        charges, at = self._earliest(now, account, operation)
        if at > now:
            return False
        for limiter, cost in charges:
            limiter.record(at, cost)
        return True

    def _earliest(self, now: float, account: str, operation: str) -> tuple[list[tuple[Limiter, float]], float]:
        op = Operation(operation)
        own = self._account(account)
        charges = self._charges(own, op)
        at = max(now, self._ip.backoff.blocked_until, own.backoff.blocked_until)
        # The first time every budget admits the call: moving later for one budget can run into
        # calls another budget has booked for later, so ask again until all agree.
        while True:
            latest = max((lim.earliest(now, cost, not_before=at) for lim, cost in charges), default=at)
            if latest <= at:
                break
            at = latest
        return charges, at

    def penalize(self, now: float, account: str | None, retry_after_s: float | None) -> float:
        """The venue answered 429 (or a ban) for `account`, or for the whole IP when None.

        Returns the pause applied: every later reservation for that account (all accounts when None)
        starts after it. Pass None when the exchange says the limit is per IP (Binance request
        weight, a 418 ban), an account when it is that key's (Binance -1015, Kraken EAPI/EOrder).
        """
        retry = 0.0 if retry_after_s is None else retry_after_s
        if not retry >= 0:
            raise ValueError(f"retry_after_s must be >= 0, not {retry_after_s!r}")
        budgets = self._ip if account is None else self._account(account)
        return budgets.backoff.penalize(now, retry, self.backoff)

    def succeeded(self, now: float, account: str) -> None:
        """A call for `account` went through: its 429 streak (and the IP's) starts over."""
        del now  # the streak ends on any success, whenever it came
        self._account(account).backoff.reset()
        self._ip.backoff.reset()

    def blocked_until(self, account: str | None) -> float:
        """When the current 429 pause for `account` (None: the IP) ends; -inf when there is none."""
        if account is None:
            return self._ip.backoff.blocked_until
        budgets = self._accounts.get(account)
        own = budgets.backoff.blocked_until if budgets else -math.inf
        return max(own, self._ip.backoff.blocked_until)

    @property
    def accounts(self) -> tuple[str, ...]:
        return tuple(self._accounts)

    def _account(self, account: str) -> _Budgets:
        if not account:
            raise ValueError("account must be a non-empty string")
        budgets = self._accounts.get(account)
        if budgets is None:
            budgets = self._accounts[account] = _Budgets(self.profile.new_limiters(Scope.ACCOUNT))
        return budgets

    def _charges(self, account: _Budgets, operation: Operation) -> list[tuple[Limiter, float]]:
        charges = []
        for name, cost in self.profile.costs[operation].items():
            scope = self.profile.budget(name).scope
            limiters = self._ip.limiters if scope is Scope.IP else account.limiters
            charges.append((limiters[name], cost))
        return charges
