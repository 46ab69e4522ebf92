"""Alpaca end to end: unmodified ccxt and the live venue against the Alpaca emulator on a real
simexchange server (port 0, loopback), the shared venue contract, and the emulator's own answers
(keys, limits, duplicates, lost answers, outages, malformed requests)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from services.domain.rate_limits import WindowLimit
from services.domain.rate_limits import alpaca as alpaca_profile
from services.domain.signal import Side
from services.emulators.alpaca import LIMITS
from services.emulators.base import Buckets
from services.executor.venues.adapters.alpaca import ADAPTER
from services.executor.venues.base import (
    Account,
    AuthenticationFailed,
    DuplicateClientOrderId,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidOrder,
    Liquidity,
    OrderNotFound,
    OrderRequest,
    OrderState,
    OrderType,
    RateLimited,
)
from services.executor.venues.live import CcxtVenue
from services.simexchange.network import Fault
from tests.contract.venue_contract import VenueContract
from tests.emulators import Emulated, emulated

BROKER = "alpaca"


@pytest.fixture
async def emu() -> AsyncIterator[Emulated]:
    async with emulated(BROKER) as running:
        yield running


@pytest.fixture
async def venue(emu: Emulated) -> AsyncIterator[CcxtVenue]:
    # Alpaca lists its assets only to a key: the venue reads markets with one of its own.
    reader = await emu.account(BROKER, "market-reader")
    venue = CcxtVenue(ADAPTER, base_url=emu.url(BROKER), market_account=reader)
    yield venue
    await venue.close()


@pytest.fixture
async def account(emu: Emulated) -> Account:
    return await emu.account(BROKER, f"user-{uuid.uuid4().hex[:8]}")


class TestAlpacaContract(VenueContract):
    """The shared contract, through ccxt, against the emulator (fixtures above)."""


# --- helpers ----------------------------------------------------------------------------------


def _headers(key: str, secret: str) -> dict[str, str]:
    return {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret}


async def _call(
    emu: Emulated, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, emu.url(BROKER) + path, headers=headers, **kwargs) as resp:
            text = await resp.text()
            body = await resp.json() if resp.content_type == "application/json" else text
            return resp.status, body, dict(resp.headers)


async def _limit_buy(venue: CcxtVenue, account: Account, client_order_id: str) -> OrderRequest:
    """A resting BTC buy 10% under the best bid."""
    book = await venue.fetch_order_book("BTC-USD")
    assert book.best_bid is not None
    price = (book.best_bid * Decimal("0.9")).quantize(Decimal(1))
    request = OrderRequest(client_order_id, "BTC-USD", Side.BUY, OrderType.LIMIT, Decimal("0.001"), price)
    assert (await venue.create_order(account, request)).state is OrderState.OPEN
    return request


def _market_buy(client_order_id: str) -> OrderRequest:
    return OrderRequest(client_order_id, "ETH-USD", Side.BUY, OrderType.MARKET, Decimal("0.05"))


# --- unmodified ccxt --------------------------------------------------------------------------


async def test_unmodified_ccxt_trades_against_the_emulator(emu: Emulated) -> None:
    key = await emu.issue_key(BROKER, "ccxt-user")
    exchange = ccxt.alpaca({"apiKey": key.api_key, "secret": key.secret, "enableRateLimit": False})
    ADAPTER.redirect(exchange, emu.url(BROKER))
    try:
        markets = await exchange.load_markets()
        assert "BTC/USD" in markets and markets["BTC/USD"]["precision"]["price"] == 1
        book = await exchange.fetch_order_book("BTC/USD")
        assert book["bids"][0][0] < book["asks"][0][0]

        price = int(book["bids"][0][0] * 0.9)
        placed = await exchange.create_order("BTC/USD", "limit", "buy", 0.001, price, {"clientOrderId": "cc-1"})
        assert (placed["clientOrderId"], placed["status"], placed["amount"]) == ("cc-1", "open", 0.001)
        fetched = await exchange.fetch_order(placed["id"])
        assert fetched["clientOrderId"] == "cc-1" and fetched["price"] == price
        cancelled = await exchange.cancel_order(placed["id"])  # 204: an all-null order
        assert cancelled["id"] is None
        assert (await exchange.fetch_order(placed["id"]))["status"] == "canceled"

        bought = await exchange.create_order("BTC/USD", "market", "buy", 0.001, None, {"clientOrderId": "cc-2"})
        assert bought["status"] == "closed" and bought["filled"] == 0.001

        balance = await exchange.fetch_balance()
        assert balance["USD"]["free"] > 0 and balance["BTC"]["total"] == pytest.approx(4.001)
        with pytest.raises(ccxt.InvalidOrder):  # Alpaca's 40410000, as ccxt files it
            await exchange.fetch_order(str(uuid.uuid4()))
    finally:
        await exchange.close()


# --- keys -------------------------------------------------------------------------------------


async def test_issued_keys_have_alpacas_form(emu: Emulated) -> None:
    key = await emu.issue_key(BROKER, "someone")
    assert len(key.api_key) == 20 and key.api_key.startswith(("PK", "AK")) and key.api_key.isupper()
    assert len(key.secret) == 40 and key.secret.isalnum()


async def test_a_wrong_or_tampered_secret_is_refused_and_is_authentication_failed(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    tampered = account.api_secret[:-1] + ("A" if account.api_secret[-1] != "A" else "B")
    for secret in (tampered, "x" * 40):
        status, body, _ = await _call(emu, "GET", "/v2/account", headers=_headers(account.api_key, secret))
        assert (status, body) == (401, {"code": 40110000, "message": "request is not authorized"})

    bad = Account(account.user_id, account.account_id, account.api_key, tampered)
    with pytest.raises(AuthenticationFailed, match="alpaca: authentication failed") as raised:
        await venue.fetch_balances(bad)
    assert "40110000" in str(raised.value)  # the exchange's own answer, passed on as the reason
    with pytest.raises(AuthenticationFailed):
        await venue.create_order(bad, _market_buy("auth-1"))
    assert emu.app.exchange.order_count(BROKER) == 0


async def test_missing_or_unknown_key_headers_are_refused(emu: Emulated, account: Account) -> None:
    refused = {"code": 40110000, "message": "request is not authorized"}
    for headers in (
        {},
        {"APCA-API-KEY-ID": account.api_key},
        {"APCA-API-SECRET-KEY": account.api_secret},
        _headers("PK" + "A" * 18, account.api_secret),
        _headers(account.api_key, ""),
    ):
        status, body, _ = await _call(emu, "GET", "/v2/positions", headers=headers)
        assert (status, body) == (401, refused), headers
    status, body, _ = await _call(emu, "GET", "/v2/positions", headers=_headers(account.api_key, account.api_secret))
    assert status == 200 and {p["symbol"] for p in body} >= {"BTCUSD", "ETHUSD"}


# --- rate limits ------------------------------------------------------------------------------


def test_the_emulators_limits_are_never_tighter_than_the_executors() -> None:
    budgets = {b.name: b.limit for b in alpaca_profile().budgets}
    for ours, theirs in (("trading", "account"), ("market_data", "market_data")):
        window = budgets[theirs]
        assert isinstance(window, WindowLimit)
        # A bucket admits any burst up to its size and its rate after; the executor's window
        # sends at most `limit` in any `window_s`.
        assert LIMITS[ours].burst >= window.limit
        assert LIMITS[ours].per_s >= window.limit / window.window_s


async def test_an_over_limit_burst_gets_429s_and_is_rate_limited(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    now = [1000.0]
    exchange = emu.app.emulators[BROKER].exchange
    exchange.buckets = Buckets(clock=lambda: now[0])  # frozen: nothing refills during the burst
    headers = _headers(account.api_key, account.api_secret)

    statuses = []
    for _ in range(int(LIMITS["trading"].burst) + 3):
        status, body, response_headers = await _call(emu, "GET", "/v2/positions", headers=headers)
        statuses.append(status)
    assert statuses.count(200) == 200 and statuses[200:] == [429, 429, 429]
    assert body == {"code": 42910000, "message": "rate limit exceeded"}
    assert response_headers["X-RateLimit-Limit"] == "200" and response_headers["X-RateLimit-Remaining"] == "0"
    assert "Retry-After" not in response_headers

    with pytest.raises(RateLimited) as raised:
        await venue.fetch_balances(account)
    assert raised.value.retry_after_s is None  # Alpaca's own 429 says when the window resets, not Retry-After
    assert not raised.value.transport

    # Per account: another account's key is not held back, and the book (per IP) is counted apart.
    other = await emu.account(BROKER, "someone-else")
    assert "USD" in await venue.fetch_balances(other)
    assert (await venue.fetch_order_book("BTC-USD")).bids

    now[0] += 2 * 60 / 200  # two tokens back (fetch_balances spends two calls)
    assert "USD" in await venue.fetch_balances(account)


async def test_a_rate_limit_fault_carries_retry_after(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    emu.app.network.set(BROKER, Fault(rate_limit_rate=1.0, retry_after_ms=2000, seed=1))
    with pytest.raises(RateLimited) as raised:
        await venue.create_order(account, _market_buy("rl-1"))
    assert raised.value.retry_after_s == 2.0
    emu.app.network.set(BROKER, Fault())
    with pytest.raises(OrderNotFound):
        await venue.fetch_order(account, "ETH-USD", "rl-1")


# --- orders -----------------------------------------------------------------------------------


async def test_a_duplicate_client_order_id_is_refused(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    body = {"symbol": "ETH/USD", "qty": "0.01", "side": "buy", "type": "market", "time_in_force": "gtc",
            "client_order_id": "dup-1"}
    headers = _headers(account.api_key, account.api_secret)
    first, placed, _ = await _call(emu, "POST", "/v2/orders", headers=headers, json=body)
    assert first == 200 and placed["status"] == "filled"
    status, refused, _ = await _call(emu, "POST", "/v2/orders", headers=headers, json=body)
    assert (status, refused) == (422, {"code": 40010001, "message": "client_order_id must be unique"})

    with pytest.raises(DuplicateClientOrderId):
        await venue.create_order(account, _market_buy("dup-1"))
    assert emu.app.exchange.order_count(BROKER) == 1
    # Found by its id, with the fill it had.
    found = await venue.fetch_order(account, "ETH-USD", "dup-1")
    assert found.state is OrderState.FILLED and found.filled_quantity == Decimal("0.01")


async def test_a_lost_answer_executes_once_and_is_found_by_client_order_id(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    await venue.load_markets()
    emu.app.network.set(BROKER, Fault(lose_response_rate=1.0, seed=1))
    with pytest.raises(ExchangeUnavailable) as raised:
        await venue.create_order(account, _market_buy("lost-1"))
    assert raised.value.transport
    emu.app.network.set(BROKER, Fault())

    found = await venue.fetch_order(account, "ETH-USD", "lost-1")
    assert (found.client_order_id, found.state, found.filled_quantity) == ("lost-1", OrderState.FILLED, Decimal("0.05"))
    assert found.fills and all(f.liquidity is Liquidity.TAKER and f.fee_currency == "USD" for f in found.fills)
    assert emu.app.exchange.order_count(BROKER) == 1
    with pytest.raises(DuplicateClientOrderId):
        await venue.create_order(account, _market_buy("lost-1"))
    assert emu.app.exchange.order_count(BROKER) == 1


async def test_fills_match_the_engine(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    report = await venue.create_order(account, _market_buy("fills-1"))
    truth = emu.app.exchange.get_order(BROKER, account.account_id, client_order_id="fills-1")
    assert [(f.price, f.quantity, f.fee) for f in report.fills] == [(f.price, f.quantity, f.fee) for f in truth.fills]
    assert report.filled_notional == truth.filled_notional and report.fees == truth.fees
    # Stable trade ids: the same fills read again carry the same ids.
    again = await venue.fetch_order(account, "ETH-USD", "fills-1")
    assert [f.trade_id for f in again.fills] == [f.trade_id for f in report.fills]


async def test_a_resting_order_filled_later_is_maker(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    request = await _limit_buy(venue, account, "maker-1")
    assert request.limit_price is not None
    emu.app.exchange.set_reference_price("BTC", request.limit_price * Decimal("0.97"))
    emu.app.exchange.tick(datetime.now(timezone.utc))  # the books follow the price; the order fills
    report = await venue.fetch_order(account, "BTC-USD", "maker-1")
    assert report.state is OrderState.FILLED
    (fill,) = report.fills
    assert fill.liquidity is Liquidity.MAKER and fill.price == request.limit_price
    assert fill.fee == request.limit_price * Decimal("0.001") * Decimal("0.0015")


async def test_cancelling_a_finished_order_returns_it_as_it_is(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    await venue.create_order(account, _market_buy("done-1"))
    report = await venue.cancel_order(account, "ETH-USD", "done-1")
    assert report.state is OrderState.FILLED
    found = await venue.fetch_order(account, "ETH-USD", "done-1")
    status, body, _ = await _call(
        emu, "DELETE", f"/v2/orders/{found.venue_order_id}", headers=_headers(account.api_key, account.api_secret)
    )
    assert (status, body) == (422, {"code": 42210000, "message": 'order is already in "filled" state'})


async def test_insufficient_funds(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    request = OrderRequest("big-1", "BTC-USD", Side.SELL, OrderType.LIMIT, Decimal(100), Decimal(70000))
    with pytest.raises(InsufficientFunds):
        await venue.create_order(account, request)
    status, body, _ = await _call(
        emu, "POST", "/v2/orders", headers=_headers(account.api_key, account.api_secret),
        json={"symbol": "BTC/USD", "qty": "100", "side": "sell", "type": "limit", "limit_price": "70000",
              "time_in_force": "gtc"},
    )
    assert status == 403 and body["code"] == 40310000 and body["symbol"] == "BTC"
    assert emu.app.exchange.order_count(BROKER) == 0


async def test_a_buy_under_alpacas_minimum_is_refused(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    with pytest.raises(InvalidOrder):  # the adapter refuses a limit buy before sending it
        await venue.create_order(
            account, OrderRequest("tiny-1", "BTC-USD", Side.BUY, OrderType.LIMIT, Decimal("0.0001"), Decimal(1000))
        )
    with pytest.raises(InvalidOrder):  # the exchange refuses a market buy (403 40310000, "cost basis")
        await venue.create_order(account, OrderRequest("tiny-2", "DOGE-USD", Side.BUY, OrderType.MARKET, Decimal(1)))
    assert emu.app.exchange.order_count(BROKER) == 0


# --- outages and errors -----------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault(unavailable=True), Fault(error_rate=1.0, seed=1)], ids=["outage", "5xx"])
async def test_an_outage_or_a_5xx_is_exchange_unavailable_and_places_nothing(
    emu: Emulated, venue: CcxtVenue, account: Account, fault: Fault
) -> None:
    await venue.load_markets()
    emu.app.network.set(BROKER, fault)
    calls = {
        "load_markets": venue.load_markets,
        "fetch_order_book": lambda: venue.fetch_order_book("BTC-USD"),
        "create_order": lambda: venue.create_order(account, _market_buy("out-1")),
        "fetch_order": lambda: venue.fetch_order(account, "ETH-USD", "out-1"),
        "cancel_order": lambda: venue.cancel_order(account, "ETH-USD", "out-1"),
        "fetch_balances": lambda: venue.fetch_balances(account),
    }
    for name, call in calls.items():
        with pytest.raises(ExchangeUnavailable) as raised:
            await call()
        assert raised.value.transport, name
    status, _, _ = await _call(emu, "GET", "/v2/account", headers=_headers(account.api_key, account.api_secret))
    assert status == (503 if fault.unavailable else 500)

    emu.app.network.set(BROKER, Fault())
    assert emu.app.exchange.order_count(BROKER) == 0
    assert (await venue.create_order(account, _market_buy("out-1"))).state is OrderState.FILLED


async def test_malformed_requests_get_alpacas_errors_and_the_emulator_keeps_serving(
    emu: Emulated, account: Account
) -> None:
    headers = _headers(account.api_key, account.api_secret)
    good = {"symbol": "BTC/USD", "qty": "0.02", "side": "buy", "type": "limit", "limit_price": "1000",
            "time_in_force": "gtc"}
    cases: list[tuple[dict[str, Any], int, int]] = [
        ({"data": b"{not json"}, 400, 40010000),
        ({"data": b"[1, 2]"}, 400, 40010000),
        ({"json": {k: v for k, v in good.items() if k != "symbol"}}, 422, 40010001),
        ({"json": {k: v for k, v in good.items() if k != "qty"}}, 422, 40010001),
        ({"json": {**good, "symbol": "FOO/USD"}}, 422, 40010001),
        ({"json": {**good, "symbol": "BTCUSD"}}, 422, 40010001),
        ({"json": {**good, "qty": "abc"}}, 422, 40010001),
        ({"json": {**good, "qty": "-1"}}, 422, 40010001),
        ({"json": {**good, "qty": "1e3"}}, 422, 40010001),
        ({"json": {**good, "side": "hold"}}, 422, 40010001),
        ({"json": {**good, "type": "stop"}}, 422, 40010001),
        ({"json": {**good, "time_in_force": "day"}}, 422, 42210000),
        ({"json": {**good, "limit_price": "1000.5"}}, 422, 40010001),  # off the $1 tick
        ({"json": {**good, "client_order_id": "x" * 129}}, 422, 40010001),
    ]
    for kwargs, want_status, want_code in cases:
        status, body, _ = await _call(emu, "POST", "/v2/orders", headers=headers, **kwargs)
        assert (status, body["code"]) == (want_status, want_code), kwargs
        assert isinstance(body["message"], str) and body["message"]

    for path, want_status, want_code in (
        (f"/v2/orders/{uuid.uuid4()}", 404, 40410000),
        ("/v2/orders:by_client_order_id?client_order_id=nope", 404, 40410000),
        ("/v2/orders:by_client_order_id", 422, 40010001),
        ("/v2/account/activities/FILL?page_size=0", 422, 40010001),
        ("/v2/account/activities/FILL?after=yesterday", 400, 40010000),
        ("/v2/account/activities/NOPE", 422, 40010001),
    ):
        status, body, _ = await _call(emu, "GET", path, headers=headers)
        assert (status, body["code"]) == (want_status, want_code), path
    status, body, _ = await _call(emu, "DELETE", f"/v2/orders/{uuid.uuid4()}", headers=headers)
    assert (status, body["code"]) == (404, 40410000)

    for query in ("", "?symbols=btcusd", "?symbols=BTC%2FUSD,BTC-USD"):
        status, body, _ = await _call(emu, "GET", f"/v1beta3/crypto/us/latest/orderbooks{query}")
        assert status == 400 and "message" in body, query
    status, body, _ = await _call(emu, "GET", "/v1beta3/crypto/us/latest/orderbooks?symbols=FOO%2FUSD")
    assert (status, body) == (200, {"orderbooks": {}})

    # Nothing was placed, and the emulator still answers.
    assert emu.app.exchange.order_count(BROKER) == 0
    status, placed, _ = await _call(emu, "POST", "/v2/orders", headers=headers, json=good)
    assert status == 200 and placed["status"] == "new" and placed["limit_price"] == "1000"
