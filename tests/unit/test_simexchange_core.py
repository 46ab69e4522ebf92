"""The simulated exchanges' engine, driven tick by tick with explicit times; no network, no sleeping."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from services.domain.money import floor_to_step
from services.domain.signal import Side
from services.simexchange.core import (
    DuplicateClientOrderId,
    InsufficientFunds,
    InvalidOrder,
    Liquidity,
    OrderNotFound,
    OrderState,
    OrderType,
    PlaceOrder,
    SimExchange,
    UnknownBroker,
    UnknownPair,
)
from services.simexchange.listings import ASSETS, QUOTE_FUNDING, FeeSchedule

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
BROKERS = ("coinbase", "kraken", "binance", "alpaca")
TAKER = {"binance": "0.001", "kraken": "0.0026", "coinbase": "0.012", "alpaca": "0.0025"}
MAKER = {"binance": "0.001", "kraken": "0.0016", "coinbase": "0.006", "alpaca": "0.0015"}


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0.25) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ex(clock: FakeClock) -> SimExchange:
    # No drift: prices move only when a test pins them.
    return SimExchange(rng=random.Random(7), clock=clock, volatility_bps=0.0, session="t")


_ids = itertools.count(1)


def order(pair: str, side: Side, qty: str, limit: str | None = None, cid: str | None = None) -> PlaceOrder:
    return PlaceOrder(
        client_order_id=cid or f"c{next(_ids)}",
        pair=pair,
        side=side,
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        quantity=Decimal(qty),
        limit_price=Decimal(limit) if limit is not None else None,
    )


def balance(ex: SimExchange, broker: str, account: str, asset: str) -> tuple[Decimal, Decimal]:
    (b,) = [b for b in ex.balances(broker, account) if b.asset == asset]
    return b.free, b.locked


# --- listings ---------------------------------------------------------------------------------


def test_pair_lists_differ_per_broker(ex: SimExchange) -> None:
    pairs = {b: {m.pair for m in ex.markets(b)} for b in BROKERS}
    assert "BNB-USD" in pairs["binance"] and all("BNB-USD" not in pairs[b] for b in BROKERS if b != "binance")
    assert "XMR-USD" in pairs["kraken"] and all("XMR-USD" not in pairs[b] for b in BROKERS if b != "kraken")
    assert "XRP-USD" not in pairs["alpaca"] and "ADA-USD" not in pairs["alpaca"]
    assert all("BTC-USD" in p and "ETH-USD" in p for p in pairs.values())
    assert len({frozenset(p) for p in pairs.values()}) == len(BROKERS)
    for broker in BROKERS:
        for m in ex.markets(broker):
            assert m.pair == f"{m.base}-USD" and m.quote == "USD"
            assert m.tick_size > 0 and m.lot_size > 0 and m.min_quantity > 0 and m.min_notional > 0


def test_fee_schedules(ex: SimExchange) -> None:
    for broker in BROKERS:
        fees = ex.fees(broker)
        assert (fees.maker, fees.taker) == (Decimal(MAKER[broker]), Decimal(TAKER[broker]))


def test_withdrawal_fees_are_small_positive_and_differ_per_broker(ex: SimExchange) -> None:
    btc = {b: {m.pair: m for m in ex.markets(b)}["BTC-USD"].withdrawal_fee for b in BROKERS}
    assert btc == {
        "binance": Decimal("0.0002"),
        "kraken": Decimal("0.00015"),
        "coinbase": Decimal("0.00005"),  # the network fee only
        "alpaca": Decimal("0.0001"),
    }
    by_base: dict[str, list[Decimal]] = {}
    for broker in BROKERS:
        for m in ex.markets(broker):
            # A flat fee per withdrawal: worth a few dollars, never a share of the account.
            assert 0 < m.withdrawal_fee * ex.reference_price(m.base) < 20, (broker, m.pair)
            by_base.setdefault(m.base, []).append(m.withdrawal_fee)
    for base, fees in by_base.items():
        assert len(set(fees)) == len(fees), base


def test_unknown_broker_and_pair(ex: SimExchange) -> None:
    with pytest.raises(UnknownBroker):
        ex.markets("ftx")
    with pytest.raises(UnknownPair):
        ex.book("alpaca", "XRP-USD")
    with pytest.raises(UnknownPair):
        ex.place_order("coinbase", "a", order("BNB-USD", Side.BUY, "1"))


# --- books ------------------------------------------------------------------------------------


def test_books_are_sane_on_every_market(ex: SimExchange) -> None:
    for broker in BROKERS:
        for m in ex.markets(broker):
            book = ex.book(broker, m.pair)
            assert len(book.bids) == 10 and len(book.asks) == 10
            assert book.bids[0].price < book.asks[0].price
            assert [lv.price for lv in book.bids] == sorted((lv.price for lv in book.bids), reverse=True)
            assert [lv.price for lv in book.asks] == sorted(lv.price for lv in book.asks)
            assert len({lv.price for lv in book.asks}) == 10
            for lv in (*book.bids, *book.asks):
                assert lv.price % m.tick_size == 0 and lv.quantity % m.lot_size == 0 and lv.quantity > 0
            assert len(ex.book(broker, m.pair, depth=3).asks) == 3


def test_binance_is_deepest_and_tightest_for_btc(ex: SimExchange) -> None:
    def side_usd(broker: str) -> Decimal:
        return sum(lv.price * lv.quantity for lv in ex.book(broker, "BTC-USD").asks)

    def spread(broker: str) -> Decimal:
        book = ex.book(broker, "BTC-USD")
        return book.asks[0].price - book.bids[0].price

    assert Decimal(250_000) < side_usd("binance") < Decimal(600_000)
    assert all(side_usd(b) < side_usd("binance") for b in ("coinbase", "kraken", "alpaca"))
    assert all(spread("binance") <= spread(b) for b in ("coinbase", "kraken", "alpaca"))


# --- market orders ----------------------------------------------------------------------------


def test_market_buy_walks_the_book_with_slippage(ex: SimExchange) -> None:
    asks = ex.book("binance", "BTC-USD").asks
    qty = asks[0].quantity + asks[1].quantity + asks[2].quantity / 2
    qty = floor_to_step(qty, Decimal("0.00001"))

    done = ex.place_order("binance", "a", order("BTC-USD", Side.BUY, str(qty)))

    assert done.state is OrderState.FILLED and done.filled_quantity == qty
    assert [f.price for f in done.fills] == [asks[0].price, asks[1].price, asks[2].price]
    assert all(f.liquidity is Liquidity.TAKER for f in done.fills)
    average = done.filled_notional / done.filled_quantity
    assert average > asks[0].price
    after = ex.book("binance", "BTC-USD").asks
    assert after[0].price == asks[2].price and after[0].quantity == asks[2].quantity - done.fills[2].quantity


def test_consumed_liquidity_stays_until_the_next_tick(ex: SimExchange, clock: FakeClock) -> None:
    best = ex.book("kraken", "ETH-USD").asks[0]
    ex.place_order("kraken", "a", order("ETH-USD", Side.BUY, str(best.quantity)))
    assert ex.book("kraken", "ETH-USD").asks[0].price > best.price

    ex.tick(clock.advance())

    assert ex.book("kraken", "ETH-USD").asks[0].price == best.price


def test_market_order_beyond_depth_fills_partly_and_cancels_the_rest(ex: SimExchange) -> None:
    asks = ex.book("binance", "BTC-USD").asks
    depth = sum(lv.quantity for lv in asks)

    done = ex.place_order("binance", "a", order("BTC-USD", Side.BUY, str(depth + 1)))

    assert done.state is OrderState.CANCELLED
    assert done.filled_quantity == depth and len(done.fills) == len(asks)
    assert ex.book("binance", "BTC-USD").asks == ()
    # Nothing left to take: the next one is cancelled without a fill.
    empty = ex.place_order("binance", "a", order("BTC-USD", Side.BUY, "0.1"))
    assert empty.state is OrderState.CANCELLED and empty.fills == ()
    assert balance(ex, "binance", "a", "USD")[1] == 0


def test_market_buy_and_sell_settle_exactly(ex: SimExchange) -> None:
    buy = ex.place_order("coinbase", "a", order("SOL-USD", Side.BUY, "250"))
    usd, _ = balance(ex, "coinbase", "a", "USD")
    sol, _ = balance(ex, "coinbase", "a", "SOL")
    assert usd == QUOTE_FUNDING - buy.filled_notional - buy.fees
    assert sol == ASSETS["SOL"].funding + Decimal(250)

    sell = ex.place_order("coinbase", "a", order("SOL-USD", Side.SELL, "100"))
    assert sell.state is OrderState.FILLED
    assert balance(ex, "coinbase", "a", "USD") == (usd + sell.filled_notional - sell.fees, 0)
    assert balance(ex, "coinbase", "a", "SOL") == (sol - 100, 0)


@pytest.mark.parametrize("broker", BROKERS)
def test_taker_fees_are_exact(ex: SimExchange, broker: str) -> None:
    done = ex.place_order(broker, "a", order("BTC-USD", Side.BUY, "0.5"))
    assert done.fills
    for fill in done.fills:
        assert fill.fee == fill.price * fill.quantity * Decimal(TAKER[broker])
        assert fill.fee_currency == "USD" and fill.liquidity is Liquidity.TAKER
    assert done.fees == sum(f.fee for f in done.fills)


# --- limit orders -----------------------------------------------------------------------------


def test_limit_order_fills_its_crossing_part_and_rests_the_rest(ex: SimExchange) -> None:
    asks = ex.book("binance", "ETH-USD").asks
    crossing = asks[0].quantity + asks[1].quantity
    limit = asks[1].price

    placed = ex.place_order("binance", "a", order("ETH-USD", Side.BUY, str(crossing + 5), str(limit)))

    assert placed.state is OrderState.PARTIALLY_FILLED
    assert [(f.price, f.liquidity) for f in placed.fills] == [
        (asks[0].price, Liquidity.TAKER),
        (asks[1].price, Liquidity.TAKER),
    ]
    assert placed.filled_quantity == crossing
    # The rest stays locked at its limit, with room for the worst (taker) fee.
    assert balance(ex, "binance", "a", "USD")[1] == 5 * limit * (1 + Decimal(TAKER["binance"]))
    assert ex.book("binance", "ETH-USD").asks[0].price == asks[2].price


@pytest.mark.parametrize("broker", BROKERS)
def test_resting_limit_order_fills_as_maker_when_a_tick_crosses_it(
    ex: SimExchange, clock: FakeClock, broker: str
) -> None:
    book = ex.book(broker, "BTC-USD")
    tick = {m.pair: m for m in ex.markets(broker)}["BTC-USD"].tick_size
    limit = floor_to_step(book.bids[0].price * Decimal("0.99"), tick)
    resting = ex.place_order(broker, "a", order("BTC-USD", Side.BUY, "0.01", str(limit)))
    assert resting.state is OrderState.OPEN and resting.fills == ()

    ex.tick(clock.advance())
    assert ex.get_order(broker, "a", client_order_id=resting.client_order_id).state is OrderState.OPEN

    ex.set_reference_price("BTC", Decimal(57_000))
    ex.tick(clock.advance())

    filled = ex.get_order(broker, "a", client_order_id=resting.client_order_id)
    assert filled.state is OrderState.FILLED
    (fill,) = filled.fills
    assert (fill.price, fill.quantity, fill.liquidity) == (limit, Decimal("0.01"), Liquidity.MAKER)
    assert fill.fee == limit * Decimal("0.01") * Decimal(MAKER[broker])
    assert fill.time == clock.now
    usd_free, usd_locked = balance(ex, broker, "a", "USD")
    assert usd_locked == 0 and usd_free == QUOTE_FUNDING - limit * Decimal("0.01") - fill.fee


def test_resting_order_bigger_than_the_book_fills_over_several_ticks(
    ex: SimExchange, clock: FakeClock
) -> None:
    placed = ex.place_order("kraken", "a", order("BTC-USD", Side.BUY, "5", "59000"))
    assert placed.state is OrderState.OPEN

    ex.set_reference_price("BTC", Decimal(58_000))
    ex.tick(clock.advance())
    first = ex.get_order("kraken", "a", venue_order_id=placed.venue_order_id)
    assert first.state is OrderState.PARTIALLY_FILLED
    assert ex.book("kraken", "BTC-USD").asks == ()  # it took everything that crossed

    while ex.get_order("kraken", "a", venue_order_id=placed.venue_order_id).state is not OrderState.FILLED:
        ex.tick(clock.advance())
    done = ex.get_order("kraken", "a", venue_order_id=placed.venue_order_id)
    assert all(f.price == Decimal(59000) and f.liquidity is Liquidity.MAKER for f in done.fills)
    fees = Decimal(5) * 59000 * Decimal(MAKER["kraken"])
    assert done.fees == fees
    assert balance(ex, "kraken", "a", "USD") == (QUOTE_FUNDING - 5 * 59000 - fees, 0)
    assert balance(ex, "kraken", "a", "BTC") == (ASSETS["BTC"].funding + 5, 0)


def test_better_priced_resting_order_fills_first(ex: SimExchange, clock: FakeClock) -> None:
    low = ex.place_order("alpaca", "a", order("BTC-USD", Side.BUY, "0.01", "58000"))
    high = ex.place_order("alpaca", "b", order("BTC-USD", Side.BUY, "3", "58500"))

    ex.set_reference_price("BTC", Decimal(57_000))
    ex.tick(clock.advance())

    assert ex.get_order("alpaca", "b", client_order_id=high.client_order_id).fills
    assert ex.get_order("alpaca", "a", client_order_id=low.client_order_id).fills == ()


def test_resting_sell_fills_when_the_price_rises(ex: SimExchange, clock: FakeClock) -> None:
    placed = ex.place_order("coinbase", "a", order("ETH-USD", Side.SELL, "2", "3100"))
    assert balance(ex, "coinbase", "a", "ETH") == (ASSETS["ETH"].funding - 2, Decimal(2))

    ex.set_reference_price("ETH", Decimal(3200))
    ex.tick(clock.advance())

    done = ex.get_order("coinbase", "a", client_order_id=placed.client_order_id)
    assert done.state is OrderState.FILLED
    proceeds = 2 * Decimal(3100) * (1 - Decimal(MAKER["coinbase"]))
    assert balance(ex, "coinbase", "a", "USD") == (QUOTE_FUNDING + proceeds, 0)
    assert balance(ex, "coinbase", "a", "ETH") == (ASSETS["ETH"].funding - 2, 0)


def test_cancel_releases_the_lock_and_is_idempotent(ex: SimExchange) -> None:
    placed = ex.place_order("binance", "a", order("BTC-USD", Side.BUY, "1", "50000"))
    assert balance(ex, "binance", "a", "USD")[1] > 0

    cancelled = ex.cancel_order("binance", "a", client_order_id=placed.client_order_id)
    assert cancelled.state is OrderState.CANCELLED
    assert balance(ex, "binance", "a", "USD") == (QUOTE_FUNDING, 0)
    again = ex.cancel_order("binance", "a", venue_order_id=placed.venue_order_id)
    assert again == cancelled

    filled = ex.place_order("binance", "a", order("BTC-USD", Side.BUY, "0.1"))
    assert ex.cancel_order("binance", "a", client_order_id=filled.client_order_id).state is OrderState.FILLED


# --- identity, funds, rules -------------------------------------------------------------------


def test_client_order_id_is_unique_per_broker_and_account(ex: SimExchange) -> None:
    ex.place_order("binance", "a", order("BTC-USD", Side.BUY, "0.1", cid="same"))
    before = ex.balances("binance", "a")

    with pytest.raises(DuplicateClientOrderId):
        ex.place_order("binance", "a", order("ETH-USD", Side.SELL, "1", cid="same"))

    assert ex.balances("binance", "a") == before
    ex.place_order("binance", "b", order("BTC-USD", Side.BUY, "0.1", cid="same"))
    ex.place_order("kraken", "a", order("BTC-USD", Side.BUY, "0.1", cid="same"))


def test_get_order_is_scoped_to_the_account(ex: SimExchange) -> None:
    placed = ex.place_order("binance", "a", order("BTC-USD", Side.BUY, "0.1"))
    assert ex.get_order("binance", "a", client_order_id=placed.client_order_id) == placed
    assert ex.get_order("binance", "a", venue_order_id=placed.venue_order_id) == placed
    with pytest.raises(OrderNotFound):
        ex.get_order("binance", "b", client_order_id=placed.client_order_id)
    with pytest.raises(OrderNotFound):
        ex.get_order("kraken", "a", client_order_id=placed.client_order_id)
    with pytest.raises(OrderNotFound):
        ex.get_order("binance", "a", client_order_id=placed.client_order_id, venue_order_id="t-O999")
    with pytest.raises(OrderNotFound):
        ex.cancel_order("binance", "a", client_order_id="never-placed")


def test_funds_are_checked_before_anything_changes(ex: SimExchange) -> None:
    before = ex.balances("binance", "a")
    book_before = ex.book("binance", "BTC-USD")
    with pytest.raises(InsufficientFunds) as raised:
        ex.place_order("binance", "a", order("BTC-USD", Side.BUY, "20", "55000"))
    assert raised.value.asset == "USD"
    with pytest.raises(InsufficientFunds) as raised:
        ex.place_order("binance", "a", order("BTC-USD", Side.SELL, "5"))  # funded with 4
    assert raised.value.asset == "BTC"
    assert ex.balances("binance", "a") == before
    assert ex.book("binance", "BTC-USD") == book_before


def test_market_buy_is_checked_against_what_its_walk_costs(ex: SimExchange) -> None:
    # A resting bid locks most of the USD; what is left pays for a small walk, not a big one.
    ex.place_order("coinbase", "a", order("BTC-USD", Side.BUY, "15", "55000"))
    free, _ = balance(ex, "coinbase", "a", "USD")
    asks = ex.book("coinbase", "BTC-USD").asks
    walk = sum(lv.price * lv.quantity for lv in asks)
    assert free < walk

    with pytest.raises(InsufficientFunds) as raised:
        ex.place_order("coinbase", "a", order("BTC-USD", Side.BUY, str(sum(lv.quantity for lv in asks))))

    assert raised.value.needed == walk * (1 + Decimal(TAKER["coinbase"]))
    assert ex.place_order("coinbase", "a", order("BTC-USD", Side.BUY, "1")).state is OrderState.FILLED


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (order("BTC-USD", Side.BUY, "0.000001"), "quantity"),  # finer than the lot 0.00001
        (order("BTC-USD", Side.BUY, "0"), "quantity"),
        (order("ETH-USD", Side.BUY, "0.0001"), "quantity"),  # notional ~0.30 < 10
        (order("DOGE-USD", Side.BUY, "1000", "0.123456"), "limit_price"),  # finer than the tick
        (PlaceOrder("x1", "BTC-USD", Side.BUY, OrderType.LIMIT, Decimal("0.1")), "limit_price"),
        (
            PlaceOrder("x2", "BTC-USD", Side.BUY, OrderType.MARKET, Decimal("0.1"), Decimal(60000)),
            "limit_price",
        ),
        (order("BTC-USD", Side.BUY, "0.1", "0"), "limit_price"),
    ],
)
def test_precision_and_minimums_are_enforced(ex: SimExchange, command: PlaceOrder, field: str) -> None:
    with pytest.raises(InvalidOrder) as raised:
        ex.place_order("binance", "a", command)
    assert raised.value.field == field
    # Refused whole: not even the account was opened.
    assert ex._accounts == {}


def test_min_quantity_differs_per_broker(ex: SimExchange) -> None:
    with pytest.raises(InvalidOrder):
        ex.place_order("kraken", "a", order("BTC-USD", Side.BUY, "0.00005"))  # kraken ordermin 0.0001
    assert ex.place_order("coinbase", "a", order("BTC-USD", Side.BUY, "0.00005")).state is OrderState.FILLED


# --- the walk ---------------------------------------------------------------------------------


def test_reference_prices_walk_and_are_reproducible_from_a_seed(clock: FakeClock) -> None:
    def session(seed: int) -> tuple[list[Decimal], object]:
        ex = SimExchange(rng=random.Random(seed), clock=clock, volatility_bps=5.0)
        path = []
        for i in range(50):
            ex.tick(T0 + timedelta(seconds=i))
            path.append(ex.reference_price("BTC"))
        return path, ex.book("kraken", "SOL-USD")

    first, book = session(42)
    again, book_again = session(42)
    other, _ = session(43)
    assert first == again and book == book_again
    assert first != other
    assert len(set(first)) > 40
    # Small steps: 50 ticks at 5 bps stay within a few percent.
    assert all(Decimal(57_000) < p < Decimal(63_000) for p in first)


def test_no_volatility_keeps_the_reference(ex: SimExchange, clock: FakeClock) -> None:
    ex.tick(clock.advance())
    assert ex.reference_price("BTC") == ASSETS["BTC"].reference_price


def test_ids_are_unique_and_carry_the_session(ex: SimExchange) -> None:
    a = ex.place_order("binance", "a", order("BTC-USD", Side.BUY, "2"))
    b = ex.place_order("kraken", "a", order("BTC-USD", Side.BUY, "2"))
    trade_ids = [f.trade_id for f in (*a.fills, *b.fills)]
    assert len(set(trade_ids)) == len(trade_ids)
    assert a.venue_order_id != b.venue_order_id
    assert all(i.startswith("t-") for i in (*trade_ids, a.venue_order_id))


# --- overrides --------------------------------------------------------------------------------


def _exchange(clock: FakeClock, **overrides: Any) -> SimExchange:
    return SimExchange(rng=random.Random(7), clock=clock, volatility_bps=0.0, session="t", **overrides)


def test_fee_overrides_replace_the_listed_schedule(clock: FakeClock) -> None:
    near_equal = {
        "binance": FeeSchedule(Decimal("0.001"), Decimal("0.001")),
        "kraken": FeeSchedule(Decimal("0.001"), Decimal("0.0011")),
    }
    ex = _exchange(clock, fee_overrides=near_equal)

    assert ex.fees("binance") == near_equal["binance"] and ex.fees("kraken") == near_equal["kraken"]
    assert ex.fees("coinbase") == FeeSchedule(Decimal(MAKER["coinbase"]), Decimal(TAKER["coinbase"]))
    done = ex.place_order("kraken", "a", order("BTC-USD", Side.BUY, "0.5"))
    assert done.fills and all(f.fee == f.price * f.quantity * Decimal("0.0011") for f in done.fills)
    # A resting buy locks room for the overridden taker fee.
    ex.place_order("kraken", "a", order("BTC-USD", Side.BUY, "1", "50000"))
    assert balance(ex, "kraken", "a", "USD")[1] == 50000 * Decimal("1.0011")


def test_depth_overrides_scale_only_their_brokers_books(clock: FakeClock) -> None:
    listed = _exchange(clock)
    scaled = _exchange(clock, depth_overrides={"alpaca": Decimal("0.05"), "kraken": Decimal(2)})

    def side_usd(ex: SimExchange, broker: str) -> Decimal:
        return sum(lv.price * lv.quantity for lv in ex.book(broker, "BTC-USD").asks)

    # Same seed, same draws: the books differ only by the multiplier (and lot rounding).
    assert Decimal("0.049") < side_usd(scaled, "alpaca") / side_usd(listed, "alpaca") < Decimal("0.051")
    assert Decimal("1.99") < side_usd(scaled, "kraken") / side_usd(listed, "kraken") < Decimal("2.01")
    assert scaled.book("binance", "BTC-USD") == listed.book("binance", "BTC-USD")
    thin = scaled.book("alpaca", "BTC-USD")
    assert [lv.price for lv in thin.asks] == [lv.price for lv in listed.book("alpaca", "BTC-USD").asks]
    # Too thin for a $10k market buy: the walk runs out and the rest is cancelled.
    done = scaled.place_order("alpaca", "a", order("BTC-USD", Side.BUY, "0.17"))
    assert done.state is OrderState.CANCELLED and done.filled_quantity == sum(lv.quantity for lv in thin.asks)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"fee_overrides": {"ftx": FeeSchedule(Decimal(0), Decimal(0))}}, UnknownBroker),
        ({"depth_overrides": {"ftx": Decimal(1)}}, UnknownBroker),
        ({"fee_overrides": {"binance": FeeSchedule(Decimal("0.002"), Decimal("0.001"))}}, ValueError),
        ({"fee_overrides": {"binance": FeeSchedule(Decimal("-0.001"), Decimal("0.001"))}}, ValueError),
        ({"fee_overrides": {"binance": FeeSchedule(Decimal("0.001"), Decimal(1))}}, ValueError),
        ({"depth_overrides": {"alpaca": Decimal(0)}}, ValueError),
        ({"depth_overrides": {"alpaca": Decimal(-1)}}, ValueError),
        ({"depth_overrides": {"alpaca": Decimal("Infinity")}}, ValueError),
    ],
)
def test_bad_overrides_fail_at_construction(
    clock: FakeClock, overrides: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        _exchange(clock, **overrides)
