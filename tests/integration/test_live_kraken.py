"""Kraken end to end: the live ccxt venue (CcxtVenue + the kraken adapter) against the Kraken emulator
over a real simexchange server on port 0, and the emulator's own answers over raw HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import aiohttp
import ccxt.async_support as ccxt
import pytest

from services.domain.signal import Side
from services.emulators.base import ApiKey
from services.executor.venues.adapters.kraken import ADAPTER, kraken_client_id
from services.executor.venues.base import (
    Account,
    AuthenticationFailed,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidOrder,
    Liquidity,
    OrderRequest,
    OrderState,
    OrderType,
    RateLimited,
)
from services.executor.venues.live import CcxtVenue
from services.simexchange.network import Fault
from tests.contract.venue_contract import VenueContract
from tests.emulators import Emulated, emulated

BROKER = "kraken"


@pytest.fixture
async def emu() -> AsyncIterator[Emulated]:
    """A fresh exchange per test: its rate-limit buckets, nonces and faults start clean."""
    async with emulated(BROKER) as running:
        yield running


@pytest.fixture
async def venue(emu: Emulated) -> AsyncIterator[CcxtVenue]:
    live = CcxtVenue(ADAPTER, base_url=emu.url(BROKER), timeout_s=5.0)
    yield live
    await live.close()


@pytest.fixture
async def account(emu: Emulated) -> Account:
    return await emu.account(BROKER, f"user-{uuid.uuid4().hex[:8]}")


class TestKrakenContract(VenueContract):
    """The shared contract; the `venue` and `account` fixtures above carry it to the emulator."""


# --- raw HTTP helpers ----------------------------------------------------------------------------


def _sign(secret: str, path: str, nonce: str, body: str) -> str:
    message = path.encode() + hashlib.sha256((nonce + body).encode()).digest()
    return base64.b64encode(hmac.new(base64.b64decode(secret), message, hashlib.sha512).digest()).decode()


class Raw:
    """Kraken's REST API spoken by hand, to see the emulator's exact answers."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self._nonce = int(time.time() * 1000)

    def nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    async def public(self, method: str, **query: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(f"{self.url}/0/public/{method}", params=query) as resp:
            return resp.status, await resp.json(content_type=None)

    async def private(
        self,
        key: ApiKey,
        method: str,
        params: dict[str, str] | None = None,
        *,
        nonce: str | None = None,
        sign_with: str | None = None,
        body: str | None = None,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
        nonce = nonce or self.nonce()
        path = f"/0/private/{method}"
        text = body if body is not None else urlencode({"nonce": nonce, **(params or {})})
        headers = {
            "API-Key": key.api_key,
            "API-Sign": _sign(sign_with or key.secret, path, nonce, text),
            "Content-Type": content_type,
        }
        async with self.session.post(f"{self.url}{path}", data=text.encode(), headers=headers) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers


@pytest.fixture
async def raw(emu: Emulated) -> AsyncIterator[Raw]:
    async with aiohttp.ClientSession() as session:
        yield Raw(session, emu.url(BROKER))


def _cid() -> str:
    return f"kraken-test-{uuid.uuid4().hex[:16]}"


async def _resting_buy(venue: CcxtVenue, account: Account, client_order_id: str) -> OrderRequest:
    book = await venue.fetch_order_book("BTC-USD", depth=1)
    assert book.best_bid is not None
    price = (book.best_bid * Decimal("0.9")).quantize(Decimal("0.1"))
    request = OrderRequest(client_order_id, "BTC-USD", Side.BUY, OrderType.LIMIT, Decimal("0.001"), price)
    assert (await venue.create_order(account, request)).state is OrderState.OPEN
    return request


# --- naming and unmodified ccxt --------------------------------------------------------------------


async def test_assets_and_pairs_use_krakens_names(raw: Raw) -> None:
    status, assets = await raw.public("Assets")
    assert status == 200 and assets["error"] == []
    assert assets["result"]["XXBT"]["altname"] == "XBT" and assets["result"]["ZUSD"]["altname"] == "USD"
    assert assets["result"]["XXDG"]["altname"] == "XDG" and assets["result"]["SOL"]["altname"] == "SOL"

    _, pairs = await raw.public("AssetPairs")
    btc = pairs["result"]["XXBTZUSD"]
    assert (btc["altname"], btc["wsname"], btc["base"], btc["quote"]) == (
        "XBTUSD",
        "XBT/USD",
        "XXBT",
        "ZUSD",
    )
    assert (
        btc["pair_decimals"],
        btc["lot_decimals"],
        btc["ordermin"],
        btc["costmin"],
    ) == (1, 8, "0.0001", "0.5")
    assert pairs["result"]["SOLUSD"]["base"] == "SOL" and pairs["result"]["DOTUSD"]["wsname"] == "DOT/USD"
    assert pairs["result"]["XDGUSD"]["base"] == "XXDG" and "XETHZUSD" in pairs["result"]
    assert "UNIUSD" not in pairs["result"]  # not listed on kraken

    _, by_altname = await raw.public("Depth", pair="XBTUSD", count="3")
    assert list(by_altname["result"]) == ["XXBTZUSD"] and len(by_altname["result"]["XXBTZUSD"]["asks"]) == 3


async def test_unmodified_ccxt_trades_against_the_emulator(emu: Emulated) -> None:
    key = await emu.issue_key(BROKER, "ccxt-user")
    exchange = ccxt.kraken({"apiKey": key.api_key, "secret": key.secret, "enableRateLimit": False})
    ADAPTER.redirect(exchange, emu.url(BROKER))
    try:
        await exchange.load_markets()
        assert exchange.markets["BTC/USD"]["id"] == "XXBTZUSD" and "DOGE/USD" in exchange.markets
        book = await exchange.fetch_order_book("BTC/USD")
        assert book["bids"][0][0] < book["asks"][0][0]
        price = float(Decimal(str(book["bids"][0][0])) * Decimal("0.9"))  # ccxt's unified API takes floats
        created = await exchange.create_order(
            "BTC/USD", "limit", "buy", 0.001, price, {"clientOrderId": "ccxt-0001"}
        )
        fetched = await exchange.fetch_order(created["id"])
        assert (fetched["status"], fetched["clientOrderId"], fetched["amount"]) == (
            "open",
            "ccxt-0001",
            0.001,
        )
        await exchange.cancel_order("", "BTC/USD", {"clientOrderId": "ccxt-0001"})
        assert (await exchange.fetch_order(created["id"]))["status"] == "canceled"
        balance = await exchange.fetch_balance()
        assert balance["USD"]["free"] > 0 and balance["BTC"]["total"] > 0
        # ccxt's own way of fetching by client id sends userref=<string>, which Kraken refuses.
        with pytest.raises(ccxt.ExchangeError):
            await exchange.fetch_order(created["id"], None, {"clientOrderId": "ccxt-0001"})
    finally:
        await exchange.close()


def test_long_client_order_ids_travel_as_a_stable_uuid() -> None:
    assert kraken_client_id("short-id-1") == "short-id-1"
    mesh_id = "nija-" + "ab" * 15  # the executor's 35-character ids
    sent = kraken_client_id(mesh_id)
    assert sent == kraken_client_id(mesh_id) and len(sent) == 36 and uuid.UUID(sent).version == 4
    assert kraken_client_id(mesh_id + "x") != sent
    assert ADAPTER.venue_client_order_id(mesh_id) == sent


# --- authentication and nonces ---------------------------------------------------------------------


async def test_bad_signatures_are_refused(
    emu: Emulated, raw: Raw, venue: CcxtVenue, account: Account
) -> None:
    key = await emu.issue_key(BROKER, account.account_id)
    tampered_body = urlencode({"nonce": "1", "asset": "ZUSD"})
    status, body, _ = await raw.private(key, "BalanceEx", nonce="5", body=tampered_body)  # signed for nonce 5
    assert (status, body) == (200, {"error": ["EAPI:Invalid signature"]})
    wrong = base64.b64encode(b"\x01" * 64).decode()
    assert (await raw.private(key, "BalanceEx", sign_with=wrong))[1] == {"error": ["EAPI:Invalid signature"]}
    unknown = ApiKey("A" * 56, key.secret, "nobody")
    assert (await raw.private(unknown, "BalanceEx"))[1] == {"error": ["EAPI:Invalid key"]}
    # A request that fails authentication never consumed its nonce: the same nonce still works.
    assert (await raw.private(key, "BalanceEx", nonce="5"))[1]["error"] == []

    with pytest.raises(AuthenticationFailed, match="EAPI:Invalid signature"):
        await venue.fetch_balances(Account(account.user_id, account.account_id, account.api_key, wrong))
    with pytest.raises(AuthenticationFailed, match="EAPI:Invalid key"):
        await venue.fetch_balances(Account("other", "other", "B" * 56, account.api_secret))
    assert (await venue.fetch_balances(account))["USD"].free > 0


async def test_replayed_or_decreasing_nonce_is_refused(raw: Raw, venue: CcxtVenue, account: Account) -> None:
    key = ApiKey(account.api_key, account.api_secret, account.account_id)
    assert (await raw.private(key, "BalanceEx", nonce="1000"))[1]["error"] == []
    assert (await raw.private(key, "BalanceEx", nonce="1000"))[1] == {"error": ["EAPI:Invalid nonce"]}
    assert (await raw.private(key, "BalanceEx", nonce="999"))[1] == {"error": ["EAPI:Invalid nonce"]}
    assert (await raw.private(key, "BalanceEx", nonce="1001"))[1]["error"] == []

    # Another client of the same key ran ahead of ccxt's millisecond nonce: ccxt raises InvalidNonce,
    # a NetworkError, which the venue reports as ExchangeUnavailable (nothing was done; try again).
    far_ahead = str(int(time.time() * 1000) * 1000)
    assert (await raw.private(key, "BalanceEx", nonce=far_ahead))[1]["error"] == []
    with pytest.raises(ExchangeUnavailable, match="InvalidNonce"):
        await venue.fetch_balances(account)


# --- rate limits and faults ------------------------------------------------------------------------


async def test_a_burst_over_the_call_counter_gets_429(raw: Raw, venue: CcxtVenue, account: Account) -> None:
    key = ApiKey(account.api_key, account.api_secret, account.account_id)
    answers = [await raw.private(key, "BalanceEx") for _ in range(22)]  # pro counter: 20, decays 1/s
    statuses = [status for status, _, _ in answers]
    assert statuses[:19] == [200] * 19 and statuses[-1] == 429
    _, body, headers = answers[-1]
    assert body == {"error": ["EAPI:Rate limit exceeded"]} and int(headers["Retry-After"]) >= 1

    with pytest.raises(RateLimited) as raised:
        await venue.fetch_balances(account)
    assert raised.value.retry_after_s is not None and raised.value.retry_after_s >= 1


async def test_public_calls_are_limited_per_ip(raw: Raw) -> None:
    statuses = [(await raw.public("Time"))[0] for _ in range(17)]  # burst 15, refills 1/s
    assert statuses[0] == 200 and statuses[-1] == 429
    assert (await raw.public("Time"))[1] == {"error": ["EGeneral:Too many requests"]}


async def test_a_fault_429_carries_retry_after(emu: Emulated, venue: CcxtVenue) -> None:
    emu.app.network.set(BROKER, Fault(rate_limit_rate=1.0, retry_after_ms=2000, seed=1))
    with pytest.raises(RateLimited) as raised:
        await venue.load_markets()
    assert raised.value.retry_after_s == 2.0


async def test_outage_and_5xx_are_exchange_unavailable(emu: Emulated, raw: Raw, venue: CcxtVenue) -> None:
    emu.app.network.set(BROKER, Fault(unavailable=True, seed=1))
    assert await raw.public("Time") == (503, {"error": ["EService:Unavailable"]})
    with pytest.raises(ExchangeUnavailable) as outage:
        await venue.load_markets()
    assert outage.value.transport

    emu.app.network.set(BROKER, Fault(error_rate=1.0, seed=1))
    assert await raw.public("Time") == (500, {"error": ["EGeneral:Internal error"]})
    with pytest.raises(ExchangeUnavailable):
        await venue.fetch_order_book("BTC-USD")

    emu.app.network.set(BROKER, Fault())
    assert (await venue.fetch_order_book("BTC-USD")).bids


async def test_a_lost_response_executes_once_and_is_found_by_client_id(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    await venue.load_markets()
    request = OrderRequest(_cid(), "ETH-USD", Side.BUY, OrderType.MARKET, Decimal("0.05"))
    before = emu.app.exchange.order_count(BROKER)
    emu.app.network.set(BROKER, Fault(lose_response_rate=1.0, seed=1))
    with pytest.raises(ExchangeUnavailable):
        await venue.create_order(account, request)
    emu.app.network.set(BROKER, Fault())

    found = await venue.fetch_order(account, "ETH-USD", request.client_order_id)
    assert found.client_order_id == request.client_order_id and found.state is OrderState.FILLED
    assert found.filled_quantity == Decimal("0.05") and found.fills
    assert emu.app.exchange.order_count(BROKER) == before + 1


# --- orders: duplicates, engine refusals, maker fills ----------------------------------------------


async def test_a_duplicate_cl_ord_id_gets_krakens_answer(raw: Raw, account: Account) -> None:
    key = ApiKey(account.api_key, account.api_secret, account.account_id)
    order = {
        "pair": "XBTUSD",
        "type": "buy",
        "ordertype": "limit",
        "volume": "0.001",
        "price": "1000.0",
        "cl_ord_id": "dup-0001",
    }
    status, first, _ = await raw.private(key, "AddOrder", order)
    assert status == 200 and first["error"] == [] and first["result"]["txid"][0].startswith("O")
    assert first["result"]["descr"]["order"] == "buy 0.00100000 XBTUSD @ limit 1000.0"
    assert (await raw.private(key, "AddOrder", order))[1] == {"error": ["EOrder:Duplicate order"]}
    _, opened, _ = await raw.private(key, "OpenOrders", {"cl_ord_id": "dup-0001"})
    assert list(opened["result"]["open"]) == first["result"]["txid"]
    assert (await raw.private(key, "OpenOrders", {"cl_ord_id": ""}))[1] == {
        "error": [],
        "result": {"open": {}},
    }


async def test_engine_refusals_are_typed(venue: CcxtVenue, account: Account) -> None:
    await venue.load_markets()
    with pytest.raises(InsufficientFunds):
        await venue.create_order(
            account,
            OrderRequest(
                _cid(),
                "BTC-USD",
                Side.SELL,
                OrderType.LIMIT,
                Decimal(100),
                Decimal(70000),
            ),
        )
    with pytest.raises(InvalidOrder):  # not listed on kraken: refused before anything is sent
        await venue.create_order(
            account,
            OrderRequest(_cid(), "UNI-USD", Side.BUY, OrderType.MARKET, Decimal(1)),
        )
    with pytest.raises(InvalidOrder):  # under Kraken's ordermin for BTC (0.0001)
        await venue.create_order(
            account,
            OrderRequest(_cid(), "BTC-USD", Side.BUY, OrderType.MARKET, Decimal("0.00005")),
        )


async def test_a_resting_order_fills_as_maker(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    request = await _resting_buy(venue, account, _cid())
    assert request.limit_price is not None
    emu.app.exchange.set_reference_price("BTC", request.limit_price * Decimal("0.97"))
    for _ in range(100):
        report = await venue.fetch_order(account, "BTC-USD", request.client_order_id)
        if report.state is OrderState.FILLED:
            break
        await asyncio.sleep(0.05)  # the engine ticks every 0.05 s
    assert report.state is OrderState.FILLED
    (fill,) = report.fills
    assert fill.liquidity is Liquidity.MAKER and fill.price == request.limit_price
    assert (
        fill.fee == request.limit_price * request.quantity * Decimal("0.0016") and fill.fee_currency == "USD"
    )


# --- malformed requests ----------------------------------------------------------------------------


async def test_malformed_requests_get_krakens_errors_and_the_emulator_keeps_serving(
    raw: Raw, account: Account
) -> None:
    key = ApiKey(account.api_key, account.api_secret, account.account_id)
    bad_form = "nonce=1&%zz=&&=="
    assert (await raw.private(key, "BalanceEx", body=bad_form, nonce="1"))[1] == {
        "error": ["EGeneral:Invalid arguments"]
    }
    bad_json = '{"nonce": "2", '
    answer = await raw.private(key, "BalanceEx", body=bad_json, nonce="2", content_type="application/json")
    assert answer[1] == {"error": ["EGeneral:Invalid arguments"]}

    order = {"pair": "XBTUSD", "type": "buy", "ordertype": "limit", "price": "1000.0"}
    assert (await raw.private(key, "AddOrder", order))[1] == {"error": ["EGeneral:Invalid arguments:volume"]}
    order["volume"] = "0.001"
    assert (await raw.private(key, "AddOrder", {**order, "pair": "FOOUSD"}))[1] == {
        "error": ["EQuery:Unknown asset pair"]
    }
    assert (await raw.private(key, "AddOrder", {**order, "ordertype": "iceberg"}))[1] == {
        "error": ["EGeneral:Invalid arguments:ordertype"]
    }
    assert (await raw.private(key, "AddOrder", {**order, "price": "1000.05"}))[1] == {
        "error": ["EOrder:Invalid price:XBTUSD price can only be specified up to 1 decimals."]
    }
    assert (await raw.private(key, "AddOrder", {**order, "volume": "0.00001"}))[1] == {
        "error": ["EOrder:Order minimum not met"]
    }
    assert (await raw.private(key, "AddOrder", {**order, "cl_ord_id": "x" * 19}))[1] == {
        "error": ["EGeneral:Invalid arguments:cl_ord_id"]
    }
    assert (await raw.private(key, "CancelOrder", {"cl_ord_id": "never-placed"}))[1] == {
        "error": ["EOrder:Unknown order"]
    }
    assert (await raw.private(key, "QueryOrders", {"txid": "OAAAAA-BBBBB-CCCCCC"}))[1] == {
        "error": ["EOrder:Invalid order"]
    }
    assert (await raw.private(key, "QueryOrders", {"txid": "OAAAAA-BBBBB-CCCCCC", "userref": "ccxt-1"}))[
        1
    ] == {"error": ["EGeneral:Invalid arguments:userref"]}

    assert await raw.public("Depth") == (
        200,
        {"error": ["EGeneral:Invalid arguments:pair"]},
    )
    assert await raw.public("Depth", pair="FOOUSD") == (
        200,
        {"error": ["EQuery:Unknown asset pair"]},
    )
    assert await raw.public("Depth", pair="XBTUSD", count="many") == (
        200,
        {"error": ["EGeneral:Invalid arguments:count"]},
    )
    assert await raw.public("NoSuchMethod") == (
        404,
        {"error": ["EGeneral:Unknown method"]},
    )

    status, alive = await raw.public("Time")
    assert status == 200 and alive["error"] == [] and alive["result"]["unixtime"] > 0
    assert (await raw.private(key, "BalanceEx"))[1]["result"]["ZUSD"]["hold_trade"] == "0"
