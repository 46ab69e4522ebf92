"""The live Binance venue (ccxt 4.5.90, unmodified) against the Binance emulator, and the emulator's
own behaviour over raw HTTP: signatures, recvWindow, rate limits, faults, malformed requests."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp
import ccxt.async_support as ccxt
import pytest

from services.domain.signal import Side
from services.emulators import binance as emulator
from services.emulators.base import ApiKey, Buckets
from services.executor.venues.adapters.binance import ADAPTER
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
from services.simexchange.network import NO_FAULT, Fault
from tests.contract.venue_contract import VenueContract
from tests.emulators import Emulated, emulated


@pytest.fixture
async def emu() -> AsyncIterator[Emulated]:
    async with emulated("binance") as running:
        yield running


@pytest.fixture
async def venue(emu: Emulated) -> AsyncIterator[CcxtVenue]:
    live = CcxtVenue(ADAPTER, base_url=emu.url("binance"))
    yield live
    await live.close()


@pytest.fixture
async def account(emu: Emulated) -> Account:
    return await emu.account("binance", "u-1")


class TestBinanceContract(VenueContract):
    """The shared venue contract; `venue` and `account` are the module's fixtures."""


# --- raw HTTP, signed the way Binance documents it ----------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _call(
    emu: Emulated,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    key: ApiKey | None = None,
    *,
    secret: str | None = None,
    timestamp: int | None = None,
    tamper: bool = False,
    body: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request; signed (timestamp first, HMAC-SHA256 of the raw string) when `key` is given.
    POST sends the parameters as a form body, the others as the query string."""
    headers: dict[str, str] = {}
    text = urlencode(params or {})
    if key is not None:
        headers["X-MBX-APIKEY"] = key.api_key
        text = urlencode({"timestamp": timestamp or _now_ms(), **(params or {})})
        signature = hmac.new((secret or key.secret).encode(), text.encode(), hashlib.sha256).hexdigest()
        if tamper:
            signature = ("0" if signature[0] != "0" else "1") + signature[1:]
        text += f"&signature={signature}"
    url = f"{emu.url('binance')}{path}"
    if method == "POST":
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        data: bytes | None = body if body is not None else text.encode()
    else:
        url, data = (f"{url}?{text}" if text else url), body
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers) as resp,
    ):
        raw = await resp.text()
        try:
            answer: Any = await resp.json(content_type=None)
        except ValueError:
            answer = raw
        return resp.status, answer, dict(resp.headers)


def _order(client_order_id: str, quantity: str = "0.002", price: str | None = None) -> OrderRequest:
    if price is None:
        return OrderRequest(client_order_id, "BTC-USD", Side.BUY, OrderType.MARKET, Decimal(quantity))
    return OrderRequest(
        client_order_id, "BTC-USD", Side.BUY, OrderType.LIMIT, Decimal(quantity), Decimal(price)
    )


def _freeze_rate_limits(emu: Emulated) -> None:
    """Stop the buckets' clock: a burst is then over the limit at once, with no sleeping."""
    emu.app.emulators["binance"].exchange.buckets = Buckets(clock=lambda: 0.0)


# --- keys and signatures ----------------------------------------------------------------------


async def test_keys_are_in_binance_format(emu: Emulated) -> None:
    key = await emu.issue_key("binance", "acct-1")
    for value in (key.api_key, key.secret):
        assert len(value) == 64 and value.isalnum()
    assert key.account_id == "acct-1"


async def test_a_signed_request_is_served(emu: Emulated) -> None:
    key = await emu.issue_key("binance", "acct-1")
    status, answer, _ = await _call(emu, "GET", "/api/v3/account", {"recvWindow": 5000}, key)
    assert status == 200
    usdt = next(b for b in answer["balances"] if b["asset"] == "USDT")
    assert Decimal(usdt["free"]) > 0 and "USD" not in {b["asset"] for b in answer["balances"]}


async def test_a_tampered_signature_or_a_wrong_secret_is_refused(emu: Emulated, venue: CcxtVenue) -> None:
    key = await emu.issue_key("binance", "acct-1")
    for kwargs in ({"tamper": True}, {"secret": "x" * 64}):
        status, answer, _ = await _call(emu, "GET", "/api/v3/account", {}, key, **kwargs)  # type: ignore[arg-type]
        assert (status, answer["code"]) == (400, -1022), kwargs
        assert answer["msg"] == "Signature for this request is not valid."

    wrong = Account(user_id="u-2", account_id="acct-1", api_key=key.api_key, api_secret="y" * 64)
    with pytest.raises(AuthenticationFailed) as raised:
        await venue.fetch_balances(wrong)
    assert "-1022" in str(raised.value) and "Signature for this request is not valid" in str(raised.value)
    assert not raised.value.transport


async def test_an_unknown_or_malformed_api_key_is_refused(emu: Emulated, venue: CcxtVenue) -> None:
    unknown = ApiKey("A" * 64, "B" * 64, "acct-1")
    status, answer, _ = await _call(emu, "GET", "/api/v3/account", {}, unknown)
    assert (status, answer["code"]) == (401, -2015)
    status, answer, _ = await _call(emu, "GET", "/api/v3/account", {}, ApiKey("short", "s", "acct-1"))
    assert (status, answer["code"]) == (401, -2014)

    stranger = Account(user_id="u-3", account_id="acct-1", api_key="A" * 64, api_secret="B" * 64)
    with pytest.raises(AuthenticationFailed, match="-2015"):
        await venue.create_order(stranger, _order("k-1"))
    assert emu.app.exchange.order_count("binance") == 0


async def test_a_timestamp_outside_the_recv_window_is_refused(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    key = await emu.issue_key("binance", "acct-1")
    late = await _call(emu, "GET", "/api/v3/account", {"recvWindow": 5000}, key, timestamp=_now_ms() - 6000)
    ahead = await _call(emu, "GET", "/api/v3/account", {}, key, timestamp=_now_ms() + 5000)
    too_wide = await _call(emu, "GET", "/api/v3/account", {"recvWindow": 70000}, key)
    assert [(s, a["code"]) for s, a, _ in (late, ahead, too_wide)] == [
        (400, -1021),
        (400, -1021),
        (400, -1131),
    ]
    assert late[1]["msg"] == "Timestamp for this request is outside of the recvWindow."

    # Through ccxt (recvWindow 10 s): the exchange's clock runs a minute ahead of the client's.
    exchange = emu.app.emulators["binance"].exchange
    real_clock = exchange.wall_clock
    exchange.wall_clock = lambda: real_clock() + timedelta(minutes=1)
    with pytest.raises(ExchangeUnavailable) as raised:
        await venue.create_order(account, _order("late-1"))
    assert isinstance(raised.value.__cause__, ccxt.InvalidNonce)
    assert emu.app.exchange.order_count("binance") == 0


# --- rate limits --------------------------------------------------------------------------------


def test_rate_limits_are_not_tighter_than_the_executor_profile() -> None:
    from services.domain.rate_limits import WindowLimit, binance

    profile = binance()
    pairs = {
        "ip_weight": emulator.REQUEST_WEIGHT,
        "orders_10s": emulator.ORDERS_10S,
        "orders_1d": emulator.ORDERS_1D,
    }
    for name, ours in pairs.items():
        executor = profile.budget(name).limit
        assert isinstance(executor, WindowLimit)
        # A bucket of the window's size refilled over the window admits everything the window does.
        assert (
            ours.limit >= executor.limit and ours.limit / ours.seconds >= executor.limit / executor.window_s
        )


async def test_a_request_weight_burst_gets_429_with_retry_after(emu: Emulated, venue: CcxtVenue) -> None:
    _freeze_rate_limits(emu)
    statuses = [
        (await _call(emu, "GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": 5000}))[0] for _ in range(25)
    ]
    assert statuses == [200] * 24 + [429]  # weight 250 each: 24 x 250 = 6000 a minute

    status, answer, headers = await _call(emu, "GET", "/api/v3/ping")
    assert (status, answer["code"]) == (429, -1003)
    assert int(headers["Retry-After"]) >= 1

    with pytest.raises(RateLimited) as raised:
        await venue.fetch_order_book("BTC-USD")
    assert raised.value.retry_after_s is not None and raised.value.retry_after_s >= 1
    assert not raised.value.transport


async def test_an_order_burst_gets_429_per_account(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    _freeze_rate_limits(emu)
    for i in range(50):
        await venue.create_order(account, _order(f"burst-{i}", price="30000"))
    with pytest.raises(RateLimited) as raised:
        await venue.create_order(account, _order("burst-50", price="30000"))
    assert raised.value.retry_after_s is not None
    assert emu.app.exchange.order_count("binance") == 50

    key = await emu.issue_key("binance", account.account_id)  # same account, another key: same count
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"}
    status, answer, headers = await _call(emu, "POST", "/api/v3/order", params, key)
    assert (status, answer["code"]) == (429, -1015) and "Retry-After" in headers
    # Another account has its own order count.
    other = await emu.account("binance", "u-2")
    assert (await venue.create_order(other, _order("other-1"))).state is OrderState.FILLED


async def test_a_rate_limit_fault_is_rate_limited_with_the_hint(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    emu.app.network.set("binance", Fault(rate_limit_rate=1.0, retry_after_ms=1500, seed=1))
    status, answer, headers = await _call(emu, "GET", "/api/v3/time")
    assert (status, answer["code"], headers["Retry-After"]) == (429, -1003, "2")  # whole seconds, rounded up
    with pytest.raises(RateLimited) as raised:
        await venue.create_order(account, _order("rl-1"))
    assert raised.value.retry_after_s == 2.0

    emu.app.network.set("binance", Fault(rate_limit_rate=1.0, seed=1))
    with pytest.raises(RateLimited) as raised:
        await venue.fetch_order_book("BTC-USD")
    assert raised.value.retry_after_s is None
    emu.app.network.set("binance", NO_FAULT)
    assert emu.app.exchange.order_count("binance") == 0


# --- orders -------------------------------------------------------------------------------------


async def test_a_duplicate_client_order_id_is_refused_by_binance(emu: Emulated, account: Account) -> None:
    key = await emu.issue_key("binance", account.account_id)
    params = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "MARKET",
        "quantity": "0.001",
        "newClientOrderId": "dup-1",
    }
    first = await _call(emu, "POST", "/api/v3/order", params, key)
    second = await _call(emu, "POST", "/api/v3/order", params, key)
    assert first[0] == 200 and first[1]["status"] == "FILLED" and first[1]["fills"]
    assert (second[0], second[1]) == (400, {"code": -2010, "msg": "Duplicate order sent."})
    assert emu.app.exchange.order_count("binance") == 1


async def test_a_filled_duplicate_is_found_through_the_venue(venue: CcxtVenue, account: Account) -> None:
    first = await venue.create_order(account, _order("dup-2"))
    with pytest.raises(DuplicateClientOrderId):
        await venue.create_order(account, _order("dup-2"))
    assert await venue.fetch_order(account, "BTC-USD", "dup-2") == first


async def test_a_lost_response_executes_and_is_found_by_client_order_id(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    await venue.load_markets()
    emu.app.network.set("binance", Fault(lose_response_rate=1.0, seed=1))
    with pytest.raises(ExchangeUnavailable) as raised:
        await venue.create_order(account, _order("lost-1"))
    assert raised.value.transport

    emu.app.network.set("binance", NO_FAULT)
    found = await venue.fetch_order(account, "BTC-USD", "lost-1")
    assert (found.client_order_id, found.state, found.filled_quantity) == (
        "lost-1",
        OrderState.FILLED,
        Decimal("0.002"),
    )
    assert found.fills and all(f.liquidity is Liquidity.TAKER and f.fee > 0 for f in found.fills)
    assert emu.app.exchange.order_count("binance") == 1
    with pytest.raises(DuplicateClientOrderId):
        await venue.create_order(account, _order("lost-1"))
    assert emu.app.exchange.order_count("binance") == 1


@pytest.mark.parametrize(
    ("fault", "status"), [(Fault(error_rate=1.0, seed=1), 500), (Fault(unavailable=True), 503)]
)
async def test_5xx_and_outage_are_exchange_unavailable_and_do_nothing(
    emu: Emulated, venue: CcxtVenue, account: Account, fault: Fault, status: int
) -> None:
    await venue.load_markets()
    emu.app.network.set("binance", fault)
    assert (await _call(emu, "GET", "/api/v3/time"))[0] == status
    for call in (
        lambda: venue.create_order(account, _order("x-1")),
        lambda: venue.fetch_order(account, "BTC-USD", "x-1"),
        lambda: venue.fetch_order_book("BTC-USD"),
        lambda: venue.fetch_balances(account),
    ):
        with pytest.raises(ExchangeUnavailable) as raised:
            await call()
        assert raised.value.transport

    emu.app.network.set("binance", NO_FAULT)
    with pytest.raises(OrderNotFound):
        await venue.fetch_order(account, "BTC-USD", "x-1")
    assert emu.app.exchange.order_count("binance") == 0


async def test_engine_refusals_carry_binance_codes(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    key = await emu.issue_key("binance", account.account_id)
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    cases = [
        ({**base, "quantity": "0.000015", "price": "30000"}, -1013, "Filter failure: LOT_SIZE"),
        (
            {**base, "quantity": "0.001", "price": "30000.000000001"},
            -1111,
            "Parameter 'price' has too much precision.",
        ),
        ({**base, "quantity": "0.001", "price": "30000.005"}, -1013, "Filter failure: PRICE_FILTER"),
        ({**base, "quantity": "0.0001", "price": "30000"}, -1013, "Filter failure: NOTIONAL"),
        (
            {**base, "quantity": "1000", "price": "30000"},
            -2010,
            "Account has insufficient balance for requested action.",
        ),
    ]
    for params, code, msg in cases:
        status, answer, _ = await _call(emu, "POST", "/api/v3/order", params, key)
        assert (status, answer) == (400, {"code": code, "msg": msg}), params

    # Through the venue: refused before sending, or typed by Binance's code.
    with pytest.raises(InsufficientFunds):
        await venue.create_order(account, _order("big-1", quantity="1000", price="30000"))
    with pytest.raises(InvalidOrder, match="-1013"):  # a market order's notional is Binance's call
        await venue.create_order(account, _order("small-1", quantity="0.0001"))
    with pytest.raises(InvalidOrder):
        await venue.create_order(
            account, OrderRequest("x-1", "XMR-USD", Side.BUY, OrderType.MARKET, Decimal(1))
        )
    assert emu.app.exchange.order_count("binance") == 0


async def test_unknown_orders_carry_binance_codes(emu: Emulated, account: Account) -> None:
    key = await emu.issue_key("binance", account.account_id)
    query = {"symbol": "BTCUSDT", "origClientOrderId": "nope"}
    assert (await _call(emu, "GET", "/api/v3/order", query, key))[1]["code"] == -2013
    assert (await _call(emu, "DELETE", "/api/v3/order", query, key))[1]["code"] == -2011
    assert (await _call(emu, "GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": 999}, key))[1][
        "code"
    ] == -2013
    assert (await _call(emu, "GET", "/api/v3/order", {"symbol": "BTCUSDT"}, key))[1]["code"] == -1102


async def test_cancelling_a_filled_order_returns_it_as_it_is(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    filled = await venue.create_order(account, _order("f-1"))
    key = await emu.issue_key("binance", account.account_id)
    status, answer, _ = await _call(
        emu, "DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "f-1"}, key
    )
    assert (status, answer["code"]) == (400, -2011)  # Binance: no longer on the book
    assert await venue.cancel_order(account, "BTC-USD", "f-1") == filled


async def test_a_resting_order_fills_as_maker(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    book = await venue.fetch_order_book("BTC-USD")
    assert book.best_bid is not None
    limit = (book.best_bid * Decimal("0.95")).quantize(Decimal("0.01"))
    await venue.create_order(account, _order("mk-1", quantity="0.01", price=str(limit)))

    emu.app.exchange.set_reference_price("BTC", limit * Decimal("0.97"))
    for _ in range(100):  # the engine's ticks (every 50 ms) fill it
        report = await venue.fetch_order(account, "BTC-USD", "mk-1")
        if report.state is OrderState.FILLED:
            break
        await asyncio.sleep(0.02)
    assert report.state is OrderState.FILLED
    (fill,) = report.fills
    assert fill.liquidity is Liquidity.MAKER and fill.price == limit and fill.fee_currency == "USD"
    assert fill.fee == limit * Decimal("0.01") * Decimal("0.001") and fill.time is not None
    assert fill.trade_id.startswith("BTCUSDT-")


# --- malformed requests -------------------------------------------------------------------------


async def test_malformed_requests_get_binance_errors_and_the_emulator_keeps_serving(emu: Emulated) -> None:
    key = await emu.issue_key("binance", "acct-1")
    signed_json = {"X-MBX-APIKEY": key.api_key, "Content-Type": "application/json"}
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"}
    url = emu.url("binance")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/api/v3/order", json=order, headers=signed_json) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, -1102)  # no form: no timestamp
        async with session.post(f"{url}/api/v3/order", data=b"symbol=\xff\xfe", headers=signed_json) as resp:
            assert (resp.status, (await resp.json())["code"]) == (400, -1100)

    cases: list[tuple[str, str, dict[str, Any], ApiKey | None, int]] = [
        ("POST", "/api/v3/order", {k: v for k, v in order.items() if k != "symbol"}, key, -1102),
        ("POST", "/api/v3/order", {**order, "symbol": "XMRUSDT"}, key, -1121),
        ("POST", "/api/v3/order", {**order, "quantity": "abc"}, key, -1100),
        ("POST", "/api/v3/order", {**order, "side": "HOLD"}, key, -1117),
        ("POST", "/api/v3/order", {**order, "type": "STOP"}, key, -1116),
        ("POST", "/api/v3/order", {**order, "price": "30000"}, key, -1106),
        ("POST", "/api/v3/order", {**order, "type": "LIMIT", "price": "30000"}, key, -1102),  # no timeInForce
        ("POST", "/api/v3/order", {**order, "newClientOrderId": "bad id!"}, key, -1100),
        ("GET", "/api/v3/depth", {}, None, -1102),
        ("GET", "/api/v3/depth", {"symbol": "NOPE"}, None, -1121),
        ("GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": "x"}, None, -1100),
        ("GET", "/api/v3/account", {}, None, -2014),  # signed endpoint, no key
    ]
    for method, path, params, signer, code in cases:
        status, answer, _ = await _call(emu, method, path, params, signer)
        assert (status, answer["code"]) == (401 if code == -2014 else 400, code), (path, params)
        assert isinstance(answer["msg"], str) and answer["msg"]

    status, answer, _ = await _call(emu, "GET", "/api/v3/depth?symbol=BTCUSDT&symbol=ETHUSDT")
    assert (status, answer["code"]) == (400, -1101)
    assert emu.app.exchange.order_count("binance") == 0
    status, answer, _ = await _call(emu, "GET", "/api/v3/exchangeInfo")
    assert status == 200 and {s["symbol"] for s in answer["symbols"]} >= {"BTCUSDT", "ETHUSDT"}


async def test_ccxt_default_load_markets_works_too(emu: Emulated) -> None:
    """Without the adapter's spot-only options ccxt also asks sapi, fapi and dapi: all answered."""
    key = await emu.issue_key("binance", "acct-1")
    exchange = ccxt.binance({"apiKey": key.api_key, "secret": key.secret, "enableRateLimit": False})
    ADAPTER.redirect(exchange, emu.url("binance"))
    try:
        markets = await exchange.load_markets()
        assert markets["BTC/USDT"]["id"] == "BTCUSDT" and markets["BTC/USDT"]["spot"]
    finally:
        await exchange.close()
