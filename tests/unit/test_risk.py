import asyncio
import dataclasses
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from services.domain.signal import Side
from services.permission.checks import Decision, Denial, TradeRequest
from services.permission.db import open_database
from services.permission.permissions import BadPermissions, RiskLimits, RoutingPreferences, UserPermissions
from services.permission.positions import ExecutionEvent, FillEvent, Position
from services.permission.risk import Bucket, Exposure, OpenReservation, check_risk, take
from services.permission.store import Reservation, UnknownUser, UserStore

BUY, SELL = Side.BUY, Side.SELL


class Clock:
    """A settable UTC clock: tests move time, they never wait for it."""

    def __init__(self, now: datetime = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


#: High enough that only the limit under test decides.
FAST = RiskLimits(trades_per_second=D(1000), trade_burst=1000)


def make_user(user_id: str = "erin", limits: RiskLimits = FAST, **changes: object) -> UserPermissions:
    fields = dict(
        user_id=user_id,
        enabled=True,
        allowed_brokers=("coinbase", "kraken"),
        allowed_pairs=(),
        max_order_size_usd=D("100000"),
        limits=limits,
    )
    fields.update(changes)
    return UserPermissions(**fields)  # type: ignore[arg-type]


# The record.


def test_limits_default_to_none_and_the_seeds_rate():
    assert RiskLimits() == RiskLimits(None, None, None, None, D(1), 1)
    assert make_user(limits=RiskLimits()).limits == RiskLimits()
    assert UserPermissions("erin", True, (), (), D(1)).limits == RiskLimits()


@pytest.mark.parametrize(
    "changes",
    [
        {"max_position_usd": D(0)},
        {"max_position_usd": D(-1)},
        {"max_position_usd": 100},
        {"max_position_usd": D("NaN")},
        {"max_daily_notional_usd": D("Infinity")},
        {"max_daily_loss_usd": D("1e-30")},
        {"max_open_positions": 0},
        {"max_open_positions": True},
        {"max_open_positions": 1.0},
        {"trades_per_second": D(0)},
        {"trades_per_second": 1},
        {"trades_per_second": D(10_000_000)},
        {"trade_burst": 0},
        {"trade_burst": D(1)},
        {"trade_burst": 10_000_000},
    ],
)
def test_malformed_limits_are_refused(changes: dict[str, object]):
    with pytest.raises(BadPermissions):
        RiskLimits(**changes)  # type: ignore[arg-type]


def test_permissions_refuse_limits_of_the_wrong_type():
    with pytest.raises(BadPermissions, match="limits must be RiskLimits"):
        make_user(limits=None)


# check_risk, pure.


def exposure(
    positions: dict[str, tuple[str, str]] | None = None,
    reservations: list[tuple[str, Side, str]] = (),
    traded: str = "0",
    realized: str = "0",
    fees: str = "0",
) -> Exposure:
    return Exposure(
        user_id="erin",
        positions={p: Position(p, D(q), D(c)) for p, (q, c) in (positions or {}).items()},
        open_reservations=tuple(
            OpenReservation(f"s{i}", pair, side, D(usd)) for i, (pair, side, usd) in enumerate(reservations)
        ),
        traded_today_usd=D(traded),
        realized_today=D(realized),
        fees_today=D(fees),
    )


def risk(limits: RiskLimits, state: Exposure, side: Side = BUY, size: str = "100", pair: str = "BTC-USD"):
    return check_risk(limits, state, pair, side, D(size))


def test_no_limits_allow_anything():
    assert risk(RiskLimits(), exposure({"BTC-USD": ("1000", "1e9")}, traded="1e12", realized="-1e9"), size="1e9") is None


def test_position_limit_counts_the_position_open_reservations_and_the_order():
    limits = RiskLimits(max_position_usd=D("1000"))
    state = exposure({"BTC-USD": ("0.02", "600")}, [("BTC-USD", BUY, "300"), ("ETH-USD", BUY, "900")])
    assert risk(limits, state, size="100") is None  # 600 + 300 + 100 = 1000: at the limit
    decision = risk(limits, state, size="100.01")
    assert decision == Decision(
        allowed=False,
        code=Denial.POSITION_LIMIT,
        reason="buy 100.01 USD of BTC-USD would take user erin's worst-case BTC-USD position to "
        "1000.01 USD (now 900 USD), above the max position of 1000 USD",
    )


def test_position_limit_counts_shorts_and_open_sells():
    limits = RiskLimits(max_position_usd=D("1000"))
    state = exposure({"BTC-USD": ("-0.02", "-600")}, [("BTC-USD", SELL, "300")])
    assert risk(limits, state, SELL, "100") is None
    assert risk(limits, state, SELL, "101").code is Denial.POSITION_LIMIT
    # A buy only lowers the worst case (the short), whatever its size up to flipping past it.
    assert risk(limits, state, BUY, "1500") is None


def test_an_order_that_lowers_the_worst_case_is_allowed_even_above_the_limit():
    limits = RiskLimits(max_position_usd=D("1000"))
    state = exposure({"BTC-USD": ("1", "5000")})  # 5x over (the limit was lowered)
    assert risk(limits, state, SELL, "4000") is None
    assert risk(limits, state, SELL, "5000") is None
    # ... but not one that keeps the worst case as high: buying more.
    assert risk(limits, state, BUY, "1").code is Denial.POSITION_LIMIT
    # Selling through zero into a short bigger than the limit is worse on the short side only
    # once it exceeds what is held now: 5000 long -> 5000 short is not worse, 5001 short is.
    assert risk(limits, state, SELL, "10000") is None
    assert risk(limits, state, SELL, "10001").code is Denial.POSITION_LIMIT


def test_open_positions_count_pairs_with_a_position_or_an_open_reservation():
    limits = RiskLimits(max_open_positions=2)
    state = exposure({"BTC-USD": ("1", "100"), "SOL-USD": ("0", "0")}, [("ETH-USD", BUY, "10")])
    # Flat SOL-USD is not open; BTC and ETH are: a third pair is refused, the open ones are not.
    assert risk(limits, state, pair="BTC-USD") is None
    assert risk(limits, state, pair="ETH-USD") is None
    decision = risk(limits, state, pair="SOL-USD")
    assert decision.code is Denial.OPEN_POSITIONS_LIMIT
    assert decision.reason == (
        "SOL-USD would be user erin's open position number 3, above the max of 2 open positions "
        "(open: BTC-USD, ETH-USD)"
    )
    assert risk(RiskLimits(max_open_positions=3), state, pair="SOL-USD") is None


def test_daily_notional_counts_traded_today_every_open_reservation_and_the_order():
    limits = RiskLimits(max_daily_notional_usd=D("1000"))
    state = exposure(reservations=[("ETH-USD", SELL, "250.5"), ("BTC-USD", BUY, "100")], traded="549.5")
    assert risk(limits, state, size="100") is None
    decision = risk(limits, state, size="100.000001")
    assert decision.code is Denial.DAILY_NOTIONAL_LIMIT
    assert decision.reason == (
        "100.000001 USD would take user erin's daily notional to 1000.000001 USD (traded today "
        "549.5 USD, open reservations 350.5 USD), above the max daily notional of 1000 USD"
    )


def test_daily_loss_stops_new_trades_once_reached_net_of_fees():
    limits = RiskLimits(max_daily_loss_usd=D("500"))
    assert risk(limits, exposure(realized="-480", fees="19.99")) is None
    decision = risk(limits, exposure(realized="-480", fees="20"))
    assert decision.code is Denial.DAILY_LOSS_LIMIT
    assert decision.reason == (
        "user erin has lost 500 USD today (realized -480 USD, fees 20 USD), reaching the max daily "
        "loss of 500 USD"
    )
    # A profitable day is far from it.
    assert risk(limits, exposure(realized="10000", fees="20")) is None


def test_limits_are_checked_in_order():
    everything = RiskLimits(
        max_position_usd=D("10"),
        max_open_positions=1,
        max_daily_notional_usd=D("10"),
        max_daily_loss_usd=D("10"),
    )
    state = exposure({"ETH-USD": ("1", "5")}, realized="-100")
    codes = []
    limits = everything
    for field in ("max_position_usd", "max_open_positions", "max_daily_notional_usd", "max_daily_loss_usd"):
        codes.append(risk(limits, state, size="50").code)
        limits = dataclasses.replace(limits, **{field: None})
    assert codes == [
        Denial.POSITION_LIMIT,
        Denial.OPEN_POSITIONS_LIMIT,
        Denial.DAILY_NOTIONAL_LIMIT,
        Denial.DAILY_LOSS_LIMIT,
    ]
    assert risk(limits, state, size="50") is None


# The rate limit, pure.


def test_a_new_user_starts_with_a_full_bucket_and_denials_cost_nothing():
    bucket = None
    results = []
    for _ in range(5):
        allowed, bucket = take(bucket, D(1), 3, now=100.0)
        results.append(allowed)
    assert results == [True, True, True, False, False]
    assert bucket == Bucket(D(0), 100.0)
    assert take(bucket, D(1), 3, now=100.999)[0] is False
    allowed, bucket = take(bucket, D(1), 3, now=101.0)
    assert allowed and bucket.tokens == 0


def test_the_bucket_refills_at_the_rate_up_to_the_burst():
    allowed, bucket = take(Bucket(D(0), 0.0), D("0.5"), 2, now=1.0)
    assert (allowed, bucket) == (False, Bucket(D("0.5"), 1.0))
    allowed, bucket = take(bucket, D("0.5"), 2, now=2.0)
    assert (allowed, bucket) == (True, Bucket(D(0), 2.0))
    allowed, bucket = take(bucket, D("0.5"), 2, now=1000.0)
    assert (allowed, bucket) == (True, Bucket(D(1), 1000.0))


def test_a_clock_that_steps_back_refills_nothing():
    allowed, bucket = take(Bucket(D(0), 50.0), D(10), 5, now=40.0)
    assert (allowed, bucket) == (False, Bucket(D(0), 50.0))


# reserve, through the store, on both backends.


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(database_url: str, clock: Clock):
    store = UserStore(database_url, clock=clock)
    await store.open()
    yield store
    await store.close()


def request(signal_id: str, size: str = "100", side: Side = BUY, pair: str = "BTC-USD", user: str = "erin"):
    return TradeRequest(user_id=user, pair=pair, side=side, size_usd=D(size), signal_id=signal_id)


def denial(reservation: Reservation) -> Denial | None:
    assert not reservation.replayed
    return reservation.decision.code


async def test_an_allowed_reserve_returns_the_brokers_and_holds_the_size(store: UserStore):
    prefs = RoutingPreferences(preferred_brokers=("kraken",))
    await store.upsert(make_user(preferences=prefs))
    reservation = await store.reserve(request("s1", "250.5", SELL))
    assert reservation == Reservation(Decision(allowed=True, brokers=("coinbase", "kraken"), preferences=prefs))
    assert await store.open_reservations("erin") == [OpenReservation("s1", "BTC-USD", SELL, D("250.5"))]


async def test_denials_come_in_order_with_their_reasons(store: UserStore):
    limits = RiskLimits(max_daily_notional_usd=D("50"), trade_burst=1, trades_per_second=D("0.001"))
    await store.upsert(make_user(limits=limits, enabled=False))
    await store.set_kill_switch("erin", True, "fat finger on ETH")
    await store.set_kill_switch(None, True, "exchange outage")

    first = await store.reserve(request("s1"))
    assert first.decision == Decision(False, "global kill switch is on: exchange outage", Denial.KILL_SWITCH)
    await store.set_kill_switch(None, False, "")
    assert (await store.reserve(request("s1"))).decision == Decision(
        False, "kill switch is on for user erin: fat finger on ETH", Denial.KILL_SWITCH
    )
    await store.set_kill_switch("erin", False, "")
    assert (await store.reserve(request("s1"))).decision.reason == "trading disabled for user erin"
    await store.set_enabled("erin", True)
    # Risk denies; the rate token is not spent on it...
    assert denial(await store.reserve(request("s1", "51"))) is Denial.DAILY_NOTIONAL_LIMIT
    # ...so the one token is there for an allowed trade...
    assert (await store.reserve(request("s1", "50"))).decision.allowed
    # ...and then the rate limit comes before risk.
    limited = await store.reserve(request("s2", "51"))
    assert limited.decision == Decision(
        False, "user erin is over the rate limit of 0.001 trades per second (burst 1)", Denial.RATE_LIMITED
    )
    assert [r.signal_id for r in await store.open_reservations("erin")] == ["s1"]


async def test_static_checks_run_inside_reserve(store: UserStore):
    await store.upsert(make_user(allowed_pairs=("ETH-USD",), max_order_size_usd=D("10")))
    assert denial(await store.reserve(request("s1", pair="BTC-USD"))) is Denial.PAIR_NOT_ALLOWED
    assert denial(await store.reserve(request("s1", "11", pair="ETH-USD"))) is Denial.SIZE_ABOVE_MAX
    assert await store.open_reservations("erin") == []


async def test_risk_limits_see_positions_and_todays_fills(store: UserStore):
    limits = dataclasses.replace(FAST, max_position_usd=D("1000"), max_daily_loss_usd=D("50"))
    await store.upsert(make_user(limits=limits))
    await store.apply_execution(
        ExecutionEvent("erin", "x1", "BTC-USD", BUY, (FillEvent("f1", D("100"), D("9"), D("0")),))
    )
    assert denial(await store.reserve(request("s1", "100.01"))) is Denial.POSITION_LIMIT
    assert (await store.reserve(request("s1", "100"))).decision.allowed
    # Sold 9 at 94.5: realized -49.5, fee 0.5: net -50 reaches the daily loss limit.
    await store.apply_execution(
        ExecutionEvent("erin", "x2", "BTC-USD", SELL, (FillEvent("f2", D("94.5"), D("9"), D("0.5")),))
    )
    assert denial(await store.reserve(request("s2", "1"))) is Denial.DAILY_LOSS_LIMIT


async def test_open_positions_limit_through_the_store(store: UserStore):
    await store.upsert(make_user(limits=dataclasses.replace(FAST, max_open_positions=1)))
    assert (await store.reserve(request("s1", pair="ETH-USD"))).decision.allowed
    assert denial(await store.reserve(request("s2", pair="BTC-USD"))) is Denial.OPEN_POSITIONS_LIMIT
    assert (await store.reserve(request("s3", pair="ETH-USD"))).decision.allowed
    assert await store.release("erin", "s1") and await store.release("erin", "s3")
    assert (await store.reserve(request("s2", pair="BTC-USD"))).decision.allowed


async def test_a_signal_reserved_before_is_a_replay(store: UserStore, clock: Clock):
    await store.upsert(make_user(limits=RiskLimits(max_daily_notional_usd=D("100"), trade_burst=1)))
    assert (await store.reserve(request("s1", "100"))).decision.allowed
    # No rate token, no risk check, no second reservation: the limits are all used up, and even
    # the kill switch does not turn a submitted signal into a denial.
    await store.set_kill_switch(None, True, "halt")
    replay = await store.reserve(request("s1", "100"))
    assert replay == Reservation(Decision(allowed=True, brokers=("coinbase", "kraken")), replayed=True)
    assert len(await store.open_reservations("erin")) == 1
    # A released reservation was given back without trading: the same signal is checked again
    # like a new one (a replay would let it trade outside every limit).
    await store.set_kill_switch(None, False, "")
    assert await store.release("erin", "s1") is True
    await store.upsert(make_user(limits=dataclasses.replace(FAST, max_daily_notional_usd=D("50"))))
    clock.advance(1)  # the bucket refills
    again = await store.reserve(request("s1", "100"))
    assert not again.replayed and denial(again) is Denial.DAILY_NOTIONAL_LIMIT
    await store.upsert(make_user(limits=dataclasses.replace(FAST, max_daily_notional_usd=D("100"))))
    assert await store.reserve(request("s1", "100")) == Reservation(
        Decision(allowed=True, brokers=("coinbase", "kraken")), replayed=False
    )
    assert len(await store.open_reservations("erin")) == 1


async def test_an_orphan_reservation_expires_and_one_the_ledger_reported_does_not(store: UserStore, clock: Clock):
    await store.upsert(make_user(limits=dataclasses.replace(FAST, max_daily_notional_usd=D("100"))))
    assert (await store.reserve(request("s1", "100"))).decision.allowed
    assert denial(await store.reserve(request("s2", "1"))) is Denial.DAILY_NOTIONAL_LIMIT
    clock.advance(59)
    assert denial(await store.reserve(request("s2", "1"))) is Denial.DAILY_NOTIONAL_LIMIT
    clock.advance(2)
    # s1 never reached the ledger (its router stopped in between): after 60 s it stops counting.
    assert (await store.reserve(request("s2", "100"))).decision.allowed
    # s2 reached it: the ledger's first report confirms the reservation, which then lasts until
    # the order ends, however long that takes.
    await store.apply_execution(ExecutionEvent("erin", "s2", "BTC-USD", BUY, ()))
    clock.advance(3600)
    assert denial(await store.reserve(request("s3", "1"))) is Denial.DAILY_NOTIONAL_LIMIT
    # The orphan's signal id, submitted again, is checked like a new signal, not replayed.
    assert denial(await store.reserve(request("s1", "1"))) is Denial.DAILY_NOTIONAL_LIMIT
    assert [r.signal_id for r in await store.open_reservations("erin")] == ["s2"]


async def test_release_is_idempotent_and_frees_the_limit(store: UserStore):
    await store.upsert(make_user(limits=dataclasses.replace(FAST, max_daily_notional_usd=D("100"))))
    assert (await store.reserve(request("s1", "100"))).decision.allowed
    assert denial(await store.reserve(request("s2", "1"))) is Denial.DAILY_NOTIONAL_LIMIT
    assert await store.release("erin", "s1") is True
    assert await store.release("erin", "s1") is False
    assert await store.release("erin", "unknown") is False
    assert (await store.reserve(request("s2", "100"))).decision.allowed
    # A done reservation cannot be released.
    await store.apply_execution(ExecutionEvent("erin", "s2", "BTC-USD", BUY, (), terminal=True))
    assert await store.release("erin", "s2") is False


async def test_reserve_needs_a_known_user_and_a_signal_id(store: UserStore):
    with pytest.raises(UnknownUser) as err:
        await store.reserve(request("s1", user="mallory"))
    assert err.value.user_id == "mallory"
    await store.upsert(make_user())
    with pytest.raises(ValueError, match="signal_id"):
        await store.reserve(request(""))


# Concurrency: two stores on one database are two permission processes.


@pytest.fixture
async def two_stores(database_url: str, clock: Clock):
    stores = [UserStore(database_url, clock=clock) for _ in range(2)]
    await asyncio.gather(*(s.open() for s in stores))
    yield stores
    for s in stores:
        await s.close()


async def test_the_race_200_reserves_over_two_processes_admit_exactly_the_limit(two_stores: list[UserStore]):
    a, b = two_stores
    await a.upsert(make_user(limits=dataclasses.replace(FAST, max_daily_notional_usd=D("1000"))))
    results = await asyncio.gather(
        *((a if i % 2 else b).reserve(request(f"s{i}", "100")) for i in range(200))
    )
    allowed = [r for r in results if r.decision.allowed]
    assert len(allowed) == 10
    assert {r.decision.code for r in results if not r.decision.allowed} == {Denial.DAILY_NOTIONAL_LIMIT}
    reserved = await b.open_reservations("erin")
    assert len(reserved) == 10 and sum(r.reserved_usd for r in reserved) == D("1000")


async def test_the_rate_limit_under_concurrency_admits_the_burst_and_no_more(two_stores: list[UserStore], clock: Clock):
    a, b = two_stores
    limits = RiskLimits(trades_per_second=D(2), trade_burst=5)
    await a.upsert(make_user("erin", limits=limits))
    await a.upsert(make_user("finn", limits=limits))
    results = await asyncio.gather(*((a if i % 2 else b).reserve(request(f"s{i}")) for i in range(40)))
    assert sum(r.decision.allowed for r in results) == 5
    assert {r.decision.code for r in results if not r.decision.allowed} == {Denial.RATE_LIMITED}
    # Another user has a bucket of its own.
    finn = await asyncio.gather(*((a if i % 2 else b).reserve(request(f"s{i}", user="finn")) for i in range(8)))
    assert sum(r.decision.allowed for r in finn) == 5
    # Half a second refills one trade at 2 per second.
    clock.advance(0.5)
    later = await asyncio.gather(*((a if i % 2 else b).reserve(request(f"t{i}")) for i in range(4)))
    assert sum(r.decision.allowed for r in later) == 1


async def test_reserve_waits_for_another_processs_transaction_on_the_user(database_url: str, store: UserStore):
    """The lock, not luck: while another connection holds the user (as a reserve in another
    process would), a reserve neither reads nor decides; once that commits, it sees its writes."""
    await store.upsert(make_user(limits=dataclasses.replace(FAST, max_daily_notional_usd=D("100"))))
    other = open_database(database_url)
    try:
        with other.transaction():
            other.lock_user("erin")
            waiting = asyncio.ensure_future(store.reserve(request("s2", "100")))
            done, _ = await asyncio.wait([waiting], timeout=0.3)
            assert not done
            other.execute(
                "INSERT INTO reservations (user_id, signal_id, pair, side, reserved_usd, filled_usd, status, "
                "day, created_at) VALUES ('erin', 's1', 'BTC-USD', 'buy', '100', '0', 'open', '2024-05-01', "
                "'2024-05-01T12:00:00+00:00')"
            )
        assert denial(await waiting) is Denial.DAILY_NOTIONAL_LIMIT
    finally:
        other.close()
