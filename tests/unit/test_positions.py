import random
from decimal import Decimal as D
from decimal import localcontext

import pytest

from services.domain.signal import Side
from services.permission.checks import TradeRequest
from services.permission.positions import EXACT, BadFill, ExecutionEvent, FillEvent, Position, apply_fill
from services.permission.store import AppliedExecution, UserStore
from tests.unit.test_risk import Clock, make_user

BUY, SELL = Side.BUY, Side.SELL


def run(fills: list[tuple[Side, str, str, str]], pair: str = "BTC-USD") -> tuple[Position, list[D]]:
    position, deltas = Position(pair), []
    for side, price, quantity, fee in fills:
        position, delta = apply_fill(position, side, D(price), D(quantity), D(fee))
        deltas.append(delta)
    return position, deltas


# The pure position manager.


def test_buys_add_exactly_and_average():
    position, deltas = run([(BUY, "30000", "0.5", "15"), (BUY, "33000", "0.25", "8.25")])
    assert position == Position("BTC-USD", D("0.75"), D("23250"), D("0"), D("23.25"))
    assert deltas == [0, 0]
    assert position.average_entry_price == D("31000")


def test_partial_sell_realizes_against_the_average_cost():
    position, deltas = run([(BUY, "30000", "0.5", "15"), (BUY, "33000", "0.25", "8.25"), (SELL, "35000", "0.3", "10.5")])
    # removed = 23250 * 0.3 / 0.75 = 9300; realized = 0.3 * 35000 - 9300 = 1200
    assert deltas[-1] == D("1200")
    assert position == Position("BTC-USD", D("0.45"), D("13950"), D("1200"), D("33.75"))
    assert position.net_pnl == D("1166.25")


def test_a_sell_through_zero_closes_then_opens_a_short_at_the_fill_price():
    position, deltas = run([(BUY, "31000", "0.45", "0"), (SELL, "32000", "1", "32")])
    # Closes 0.45 (realized 0.45 * 32000 - 13950 = 450), opens 0.55 short at 32000.
    assert deltas[-1] == D("450")
    assert position == Position("BTC-USD", D("-0.55"), D("-17600"), D("450"), D("32"))
    assert position.average_entry_price == D("32000")


def test_a_buy_reduces_a_short():
    position, deltas = run([(SELL, "32000", "0.55", "0"), (BUY, "30000", "0.2", "6")])
    # removed = -17600 * 0.2 / 0.55 = -6400; realized = 6400 - 0.2 * 30000 = 400
    assert deltas[-1] == D("400")
    assert position == Position("BTC-USD", D("-0.35"), D("-11200"), D("400"), D("6"))


def test_partial_closes_round_half_even_to_12_places_and_a_full_close_takes_the_rest():
    position, deltas = run(
        [
            (BUY, "33", "1", "0"),
            (BUY, "33", "1", "0"),
            (BUY, "34", "1", "0"),
            (SELL, "40", "1", "0"),  # removed = 100/3 = 33.333333333333(3...) -> 33.333333333333
            (SELL, "40", "1", "0"),  # removed = 66.666666666667/2 = 33.3333333333335 -> ...334 (half-even)
            (SELL, "40", "1", "0"),  # the whole rest: 33.333333333333 exactly
        ]
    )
    assert deltas[3:] == [D("6.666666666667"), D("6.666666666666"), D("6.666666666667")]
    assert position == Position("BTC-USD", D("0"), D("0"), D("20"), D("0"))
    assert position.average_entry_price == 0


def test_average_entry_price_is_quantized():
    position, _ = run([(BUY, "1", "3", "0"), (BUY, "2", "3", "0"), (BUY, "2", "3", "0")])
    assert position.average_entry_price == D("1.666666666667")


def test_fees_accumulate_apart_from_realized_pnl_and_rebates_are_negative_fees():
    position, _ = run([(BUY, "100", "1", "0.25"), (SELL, "90", "1", "-0.05")])
    assert (position.realized_pnl, position.fees, position.net_pnl) == (D("-10"), D("0.20"), D("-10.20"))


def test_realized_minus_cost_basis_is_exactly_the_cash_the_fills_moved():
    """Whatever the rounding of partial closes, nothing is created or lost: a seeded random walk."""
    rng = random.Random(20240501)
    position = Position("ETH-USD")
    cash = D(0)
    for _ in range(2000):
        side = rng.choice([BUY, SELL])
        price = D(rng.randint(1, 10_000_000)) / D(10 ** rng.randint(0, 6))
        quantity = D(rng.randint(1, 10_000_000)) / D(10 ** rng.randint(0, 9))
        fee = D(rng.randint(0, 1000)) / D(100)
        position, _ = apply_fill(position, side, price, quantity, fee)
        with localcontext(EXACT):  # the test's own sums must not round either
            cash += price * quantity if side is SELL else -(price * quantity)
            assert cash == position.realized_pnl - position.cost_basis
        assert (position.quantity == 0) == (position.cost_basis == 0)
        assert position.quantity == 0 or (position.quantity > 0) == (position.cost_basis > 0)


@pytest.mark.parametrize(
    ("side", "price", "quantity", "fee"),
    [
        ("buy", D("1"), D("1"), D("0")),
        (BUY, D("0"), D("1"), D("0")),
        (BUY, D("-1"), D("1"), D("0")),
        (BUY, D("1"), D("0"), D("0")),
        (BUY, D("NaN"), D("1"), D("0")),
        (BUY, D("1"), D("Infinity"), D("0")),
        (BUY, 1.5, D("1"), D("0")),
        (BUY, D("1"), D("1"), None),
    ],
)
def test_malformed_fills_are_refused(side, price, quantity, fee):
    with pytest.raises(BadFill):
        apply_fill(Position("BTC-USD"), side, price, quantity, fee)


def test_malformed_events_are_refused():
    with pytest.raises(BadFill):
        FillEvent("", D("1"), D("1"), D("0"))
    with pytest.raises(BadFill):
        ExecutionEvent("erin", "sig-1", "btc-usd", BUY, ())
    with pytest.raises(BadFill):
        ExecutionEvent("erin", "sig-1", "BTC-USD", BUY, (FillEvent("f1", D("1"), D("-1"), D("0")),))


# The store: fills applied exactly once, positions and today's figures from them.


@pytest.fixture
async def store(database_url: str):
    store = UserStore(database_url, clock=Clock())
    await store.open()
    await store.upsert(make_user("erin"))
    yield store
    await store.close()


def fill(key: str, price: str, quantity: str, fee: str = "0") -> FillEvent:
    return FillEvent(key, D(price), D(quantity), D(fee))


def event(signal_id: str, side: Side, *fills: FillEvent, terminal: bool = False, pair: str = "BTC-USD"):
    return ExecutionEvent("erin", signal_id, pair, side, fills, terminal)


async def test_a_scripted_day_of_fills_with_duplicates_matches_the_hand_ledger(store: UserStore):
    script = [
        event("s1", BUY, fill("f1", "30000", "0.5", "15")),
        event("s1", BUY, fill("f1", "30000", "0.5", "15"), fill("f2", "33000", "0.25", "8.25"), terminal=True),
        event("s2", SELL, fill("f3", "35000", "0.3", "10.5")),
        event("s2", SELL, fill("f3", "35000", "0.3", "10.5"), terminal=True),  # all duplicate
        event("s3", SELL, fill("f4", "32000", "1", "32"), fill("f4", "32000", "1", "32")),  # crosses zero
        event("s4", BUY, fill("f5", "30000", "0.2", "6"), terminal=True),
    ]
    applied = [await store.apply_execution(e) for e in script]
    assert [a.new_fills for a in applied] == [1, 1, 1, 0, 1, 1]
    assert [a.realized_pnl for a in applied] == [0, 0, D("1200"), 0, D("450"), D("400")]
    expected = Position("BTC-USD", D("-0.35"), D("-11200"), D("2050"), D("71.75"))
    assert applied[-1] == AppliedExecution(1, expected, D("400"))
    assert await store.positions("erin") == [expected]
    exposure = await store.exposure("erin")
    # 15000 + 8250 + 10500 + 32000 + 6000
    assert exposure.traded_today_usd == D("71750")
    assert (exposure.realized_today, exposure.fees_today) == (D("2050"), D("71.75"))

    # The whole script again, as a redelivery: nothing changes.
    again = [await store.apply_execution(e) for e in script]
    assert [a.new_fills for a in again] == [0] * len(script)
    assert await store.positions("erin") == [expected]
    assert (await store.exposure("erin")).traded_today_usd == D("71750")


async def test_fills_count_against_the_reservation_and_terminal_releases_the_rest(store: UserStore):
    reservation = await store.reserve(TradeRequest("erin", "BTC-USD", BUY, D("100"), "s1"))
    assert reservation.decision.allowed
    await store.apply_execution(event("s1", BUY, fill("f1", "20", "2")))
    (open_,) = await store.open_reservations("erin")
    assert (open_.reserved_usd, open_.filled_usd, open_.remaining_usd) == (D("100"), D("40"), D("60"))

    await store.apply_execution(event("s1", BUY, terminal=True))
    assert await store.open_reservations("erin") == []
    exposure = await store.exposure("erin")
    assert exposure.open_reservations == () and exposure.traded_today_usd == D("40")
    # A late fill of a finished reservation still moves the position, once.
    await store.apply_execution(event("s1", BUY, fill("f2", "20", "1"), terminal=True))
    assert (await store.positions("erin"))[0].quantity == D("3")


async def test_fills_for_an_unknown_reservation_still_move_the_position(store: UserStore):
    applied = await store.apply_execution(event("never-reserved", SELL, fill("f1", "10", "1.5", "0.01"), pair="ETH-USD"))
    assert applied.position == Position("ETH-USD", D("-1.5"), D("-15"), D("0"), D("0.01"))
    assert await store.open_reservations("erin") == []


async def test_fill_keys_are_per_user(store: UserStore):
    await store.upsert(make_user("finn"))
    await store.apply_execution(event("s1", BUY, fill("f1", "10", "1")))
    other = ExecutionEvent("finn", "s1", "BTC-USD", BUY, (fill("f1", "10", "1"),))
    assert (await store.apply_execution(other)).new_fills == 1


async def test_exact_decimals_survive_the_store(store: UserStore):
    await store.apply_execution(event("s1", BUY, fill("f1", "0.123456789012345678", "123456789.123456789", "0.000000000000000001")))
    (position,) = await store.positions("erin")
    assert position.cost_basis == D("15241578.766956257515622620763907942")  # 36 significant digits
    assert position.fees == D("0.000000000000000001")


async def test_daily_figures_reset_at_midnight_utc(database_url: str):
    clock = Clock()
    store = UserStore(database_url, clock=clock)
    await store.open()
    try:
        await store.upsert(make_user("erin"))
        await store.apply_execution(event("s1", BUY, fill("f1", "100", "1")))
        clock.advance(24 * 3600)
        await store.apply_execution(event("s2", SELL, fill("f2", "90", "1")))
        exposure = await store.exposure("erin")
        assert (exposure.traded_today_usd, exposure.realized_today) == (D("90"), D("-10"))
    finally:
        await store.close()
