"""The contract every Venue passes: the simulated exchange and every live ccxt venue alike.

Subclass `VenueContract` as `Test<Something>Contract` and provide two fixtures: an async `venue`
(a connected Venue, closed by the fixture) and `account` (an Account funded on it with quote and
base currency of `pair`). Override the hooks below when a venue needs other values. Orders are
small (about `order_notional` of quote) and resting ones are priced far from the market, so the
suite can run against a sandbox account without moving anything.
"""

from __future__ import annotations

import uuid
from decimal import ROUND_CEILING, Decimal

import pytest

from services.domain.money import floor_to_step
from services.domain.signal import Side
from services.executor.venues.base import (
    Account,
    DuplicateClientOrderId,
    InvalidOrder,
    Liquidity,
    Market,
    OrderBook,
    OrderNotFound,
    OrderRequest,
    OrderState,
    OrderType,
    Venue,
)


class VenueContract:
    pair = "BTC-USD"
    order_notional = Decimal(100)
    #: A resting buy is priced this far under the best bid, so it never fills during a test.
    resting_discount = Decimal("0.9")

    # --- hooks ---------------------------------------------------------------------------------

    def client_order_id(self) -> str:
        return f"contract-{uuid.uuid4().hex[:20]}"

    def market_quantity(self, market: Market, book: OrderBook) -> Decimal:
        """A small quantity that clears the market's minimums."""
        assert book.best_ask is not None
        notional = max(self.order_notional, market.min_notional * 2)
        steps = (notional / book.best_ask / market.lot_size).to_integral_value(rounding=ROUND_CEILING)
        return max(steps * market.lot_size, market.min_quantity)

    def resting_buy_price(self, market: Market, book: OrderBook) -> Decimal:
        assert book.best_bid is not None
        return floor_to_step(book.best_bid * self.resting_discount, market.tick_size)

    # --- helpers -------------------------------------------------------------------------------

    async def _market_and_book(self, venue: Venue) -> tuple[Market, OrderBook]:
        markets = await venue.load_markets()
        return markets[self.pair], await venue.fetch_order_book(self.pair)

    async def _rest_a_buy(self, venue: Venue, account: Account, client_order_id: str) -> OrderRequest:
        market, book = await self._market_and_book(venue)
        price = self.resting_buy_price(market, book)
        steps = (market.min_notional * 2 / price / market.lot_size).to_integral_value(rounding=ROUND_CEILING)
        quantity = max(steps * market.lot_size, market.min_quantity)
        request = OrderRequest(client_order_id, self.pair, Side.BUY, OrderType.LIMIT, quantity, price)
        report = await venue.create_order(account, request)
        assert report.state is OrderState.OPEN
        return request

    # --- the contract --------------------------------------------------------------------------

    async def test_markets_load(self, venue: Venue) -> None:
        markets = await venue.load_markets()
        assert self.pair in markets
        for pair, market in markets.items():
            assert market.pair == pair == f"{market.base}-{market.quote}"
            assert market.tick_size > 0 and market.lot_size > 0
            assert market.min_quantity >= 0 and market.min_notional >= 0
            assert market.withdrawal_fee >= 0  # 0 when the venue does not say

    async def test_fees_are_fractions(self, venue: Venue) -> None:
        fees = await venue.fetch_fees()
        assert 0 <= fees.maker <= fees.taker < Decimal("0.05")

    async def test_order_book_is_sane(self, venue: Venue) -> None:
        market, book = await self._market_and_book(venue)
        assert book.bids and book.asks
        assert book.best_bid is not None and book.best_ask is not None and book.best_bid < book.best_ask
        assert [lv.price for lv in book.bids] == sorted((lv.price for lv in book.bids), reverse=True)
        assert [lv.price for lv in book.asks] == sorted(lv.price for lv in book.asks)
        assert all(lv.quantity > 0 for lv in (*book.bids, *book.asks))
        shallow = await venue.fetch_order_book(self.pair, depth=1)
        assert len(shallow.bids) <= 1 and len(shallow.asks) <= 1

    async def test_market_buy_fills_with_fees(self, venue: Venue, account: Account) -> None:
        market, book = await self._market_and_book(venue)
        quantity = self.market_quantity(market, book)
        request = OrderRequest(self.client_order_id(), self.pair, Side.BUY, OrderType.MARKET, quantity)

        report = await venue.create_order(account, request)

        assert report.client_order_id == request.client_order_id and report.venue_order_id
        assert report.state is OrderState.FILLED
        assert report.filled_quantity == quantity == sum(f.quantity for f in report.fills)
        assert report.filled_notional == sum(f.price * f.quantity for f in report.fills)
        assert report.fees == sum(f.fee for f in report.fills) > 0
        for fill in report.fills:
            assert fill.trade_id and fill.price > 0 and fill.fee_currency == market.quote
            assert fill.liquidity is Liquidity.TAKER
        assert len({f.trade_id for f in report.fills}) == len(report.fills)

    async def test_limit_order_rests_is_found_and_cancelled(self, venue: Venue, account: Account) -> None:
        request = await self._rest_a_buy(venue, account, self.client_order_id())

        found = await venue.fetch_order(account, self.pair, request.client_order_id)
        assert found.state is OrderState.OPEN and found.fills == ()
        assert (found.quantity, found.limit_price, found.side) == (
            request.quantity,
            request.limit_price,
            Side.BUY,
        )

        cancelled = await venue.cancel_order(account, self.pair, request.client_order_id)
        assert cancelled.state is OrderState.CANCELLED
        assert (
            await venue.fetch_order(account, self.pair, request.client_order_id)
        ).state is OrderState.CANCELLED

    async def test_resting_order_locks_funds_until_cancelled(self, venue: Venue, account: Account) -> None:
        quote = (await venue.load_markets())[self.pair].quote
        before = (await venue.fetch_balances(account))[quote]
        request = await self._rest_a_buy(venue, account, self.client_order_id())
        assert request.limit_price is not None

        locked = (await venue.fetch_balances(account))[quote]
        assert locked.locked - before.locked >= request.quantity * request.limit_price

        await venue.cancel_order(account, self.pair, request.client_order_id)
        assert (await venue.fetch_balances(account))[quote] == before

    async def test_duplicate_client_order_id_is_refused(self, venue: Venue, account: Account) -> None:
        client_order_id = self.client_order_id()
        request = await self._rest_a_buy(venue, account, client_order_id)
        try:
            with pytest.raises(DuplicateClientOrderId):
                await venue.create_order(account, request)
        finally:
            await venue.cancel_order(account, self.pair, client_order_id)

    async def test_unknown_order_is_not_found(self, venue: Venue, account: Account) -> None:
        with pytest.raises(OrderNotFound):
            await venue.fetch_order(account, self.pair, self.client_order_id())
        with pytest.raises(OrderNotFound):
            await venue.cancel_order(account, self.pair, self.client_order_id())

    async def test_order_breaking_market_rules_is_invalid(self, venue: Venue, account: Account) -> None:
        market, _ = await self._market_and_book(venue)
        too_fine = market.lot_size / 10
        request = OrderRequest(self.client_order_id(), self.pair, Side.BUY, OrderType.MARKET, too_fine)
        with pytest.raises(InvalidOrder):
            await venue.create_order(account, request)

    async def test_balances(self, venue: Venue, account: Account) -> None:
        market = (await venue.load_markets())[self.pair]
        balances = await venue.fetch_balances(account)
        assert market.quote in balances and market.base in balances
        for asset, balance in balances.items():
            assert balance.asset == asset and balance.free >= 0 and balance.locked >= 0
        assert balances[market.quote].free > 0
