"""Coinbase through ccxt against the local Coinbase emulator: the venue contract, then the emulator's
own behaviour (JWT checks, replays, rate limits, duplicates, lost answers, faults, bad input), over
raw HTTP where the point is what the exchange answers and through the venue where it is what the
executor sees."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from services.domain.rate_limits import profile_for
from services.domain.signal import Side
from services.emulators.base import ApiKey
from services.emulators.coinbase import DIALECT, LIMITS
from services.executor.venues.adapters.coinbase import ADAPTER, is_order_sent, order_body
from services.executor.venues.base import (
    Account,
    AuthenticationFailed,
    DuplicateClientOrderId,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidOrder,
    Liquidity,
    Market,
    OrderRequest,
    OrderState,
    OrderType,
    RateLimited,
)
from services.executor.venues.live import CcxtVenue
from services.simexchange.network import Fault
from tests.contract.venue_contract import VenueContract
from tests.emulators import Emulated, emulated

V3 = "/api/v3/brokerage"


@pytest.fixture
async def emu() -> AsyncIterator[Emulated]:
    async with emulated("coinbase") as running:
        yield running


@pytest.fixture
async def venue(emu: Emulated) -> AsyncIterator[CcxtVenue]:
    live = CcxtVenue(ADAPTER, base_url=emu.url("coinbase"))
    yield live
    await live.close()


@pytest.fixture
async def account(emu: Emulated) -> Account:
    return await emu.account("coinbase", f"u-{uuid.uuid4().hex[:10]}")


class TestCoinbaseContract(VenueContract):
    """The shared contract, through unmodified ccxt, against the emulator."""


# --- a client-side JWT, to talk raw HTTP -----------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_for(
    key: ApiKey | Account,
    method: str,
    url: str,
    *,
    nonce: str | None = None,
    now: int | None = None,
    lifetime: int = 120,
    uri: str | None = None,
    secret: str | None = None,
) -> str:
    """A token the way ccxt makes one (uri keeps the http:// prefix, query stripped)."""
    api_key = key.api_key
    pem = secret or (key.secret if isinstance(key, ApiKey) else key.api_secret)
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    now = int(time.time()) if now is None else now
    header = {"alg": "ES256", "typ": "JWT", "kid": api_key, "nonce": nonce or uuid.uuid4().hex}
    claims = {
        "aud": ["retail_rest_api_proxy"],
        "iss": "coinbase-cloud",
        "nbf": now,
        "iat": now,
        "exp": now + lifetime,
        "sub": api_key,
        "uri": uri or f"{method} {url.split('?')[0]}",
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str | None = None,
    body: str | bytes | None = None,
) -> tuple[int, str, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.request(method, url, data=body, headers=headers) as resp:
        text = await resp.text()
        parsed = json.loads(text) if resp.content_type == "application/json" else None
        return resp.status, text, parsed


async def signed(http: aiohttp.ClientSession, key: Account, method: str, url: str, body: Any = None) -> Any:
    status, text, parsed = await call(
        http, method, url, jwt_for(key, method, url), json.dumps(body) if body is not None else None
    )
    assert status == 200, text
    return parsed


def _limit_order(client_order_id: str, base: str = "0.001", price: str = "30000.00") -> dict[str, Any]:
    return {
        "client_order_id": client_order_id,
        "product_id": "BTC-USD",
        "side": "BUY",
        "order_configuration": {
            "limit_limit_gtc": {"base_size": base, "limit_price": price, "post_only": False}
        },
    }


# --- unmodified ccxt -------------------------------------------------------------------------------


async def test_unmodified_ccxt_trades_against_the_emulator(emu: Emulated, account: Account) -> None:
    ex = ccxt.coinbase({"apiKey": account.api_key, "secret": account.api_secret, "enableRateLimit": False})
    ADAPTER.redirect(ex, emu.url("coinbase"))
    ex.has["fetchCurrencies"] = False
    try:
        await ex.load_markets()
        assert ex.markets["BTC/USD"]["id"] == "BTC-USD"
        assert ex.markets["BTC/USD"]["taker"] == pytest.approx(0.012)  # from transaction_summary
        book = await ex.fetch_order_book("BTC/USD")
        assert book["bids"][0][0] < book["asks"][0][0]

        placed = await ex.create_order("BTC/USD", "limit", "buy", 0.01, 30000, {"client_order_id": "raw-1"})
        assert placed["clientOrderId"] == "raw-1"
        fetched = await ex.fetch_order(placed["id"])
        assert (fetched["status"], fetched["amount"], fetched["price"]) == ("open", 0.01, 30000)
        await ex.cancel_order(placed["id"])
        assert (await ex.fetch_order(placed["id"]))["status"] == "canceled"

        sold = await ex.create_order("BTC/USD", "market", "sell", 0.01)
        assert (await ex.fetch_order(sold["id"]))["status"] == "closed"
        # ccxt turns a market buy into a quote_size spend (amount x price).
        bought = await ex.create_order("BTC/USD", "market", "buy", 0.01, book["asks"][0][0])
        assert (await ex.fetch_order(bought["id"]))["filled"] > 0
        trades = await ex.fetch_my_trades("BTC/USD")
        assert {t["takerOrMaker"] for t in trades} == {"taker"}

        balance = await ex.fetch_balance({"v3": True})
        assert balance["USD"]["free"] > 0 and balance["BTC"]["total"] > 0
    finally:
        await ex.close()


# --- authentication --------------------------------------------------------------------------------


async def test_tampered_token_is_refused_like_coinbase(emu: Emulated, account: Account) -> None:
    url = f"{emu.url('coinbase')}{V3}/accounts"
    good = jwt_for(account, "GET", url)
    head, claims, signature = good.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    other_claims = jwt_for(account, "GET", f"{emu.url('coinbase')}{V3}/orders/historical/batch").split(".")[1]
    async with aiohttp.ClientSession() as http:
        for token in (f"{head}.{claims}.{flipped}", f"{head}.{other_claims}.{signature}", "not-a-jwt"):
            status, text, _ = await call(http, "GET", url, token)
            assert (status, text) == (401, "Unauthorized\n")
        status, _, body = await call(http, "GET", url, good)
        assert status == 200 and body["accounts"]


async def test_expired_foreign_or_misdirected_tokens_are_refused(emu: Emulated, account: Account) -> None:
    base = emu.url("coinbase")
    url = f"{base}{V3}/accounts"
    stranger = DIALECT.issue_key("nobody")  # a well-formed key the emulator never issued
    other = await emu.account("coinbase", "someone-else")
    tokens = {
        "expired": jwt_for(account, "GET", url, now=int(time.time()) - 300),
        "too long-lived": jwt_for(account, "GET", url, lifetime=3600),
        "other path": jwt_for(account, "GET", f"{base}{V3}/transaction_summary"),
        "other method": jwt_for(account, "POST", url),
        "other host": jwt_for(account, "GET", url, uri=f"GET api.coinbase.com{V3}/accounts"),
        "unknown key": jwt_for(stranger, "GET", url),
        "wrong secret": jwt_for(account, "GET", url, secret=other.api_secret),
    }
    async with aiohttp.ClientSession() as http:
        for why, token in tokens.items():
            status, _, _ = await call(http, "GET", url, token)
            assert status == 401, why
        assert (await call(http, "GET", url))[0] == 401  # no token at all
        # Coinbase's own uri form (no scheme) is accepted for the same request.
        host_path = url.removeprefix("http://")
        assert (await call(http, "GET", url, jwt_for(account, "GET", url, uri=f"GET {host_path}")))[0] == 200


async def test_replayed_token_is_refused(emu: Emulated, account: Account) -> None:
    url = f"{emu.url('coinbase')}{V3}/accounts"
    token = jwt_for(account, "GET", url)
    async with aiohttp.ClientSession() as http:
        assert (await call(http, "GET", url, token))[0] == 200
        assert (await call(http, "GET", url, token))[0] == 401
        # A fresh token with the same nonce is a replay too.
        assert (await call(http, "GET", url, jwt_for(account, "GET", url, nonce=token_nonce(token))))[
            0
        ] == 401


def token_nonce(token: str) -> str:
    head = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["nonce"])


async def test_wrong_secret_is_authentication_failed_through_the_venue(
    emu: Emulated, venue: CcxtVenue
) -> None:
    mine = await emu.account("coinbase", "victim")
    thief = Account(
        user_id="thief", account_id="x", api_key=mine.api_key, api_secret=DIALECT.issue_key("x").secret
    )
    with pytest.raises(AuthenticationFailed) as raised:
        await venue.fetch_balances(thief)
    assert "authentication failed" in str(raised.value) and "401" in str(raised.value)


# --- rate limits -----------------------------------------------------------------------------------


def test_limits_are_no_tighter_than_the_executors_profile() -> None:
    profile = profile_for("coinbase")
    for name in ("private", "public"):
        window = profile.budget(name).limit
        assert LIMITS[name].burst >= window.limit  # type: ignore[union-attr]
        assert LIMITS[name].per_s >= window.limit / window.window_s  # type: ignore[union-attr]


async def test_public_burst_gets_429s_per_ip(emu: Emulated, venue: CcxtVenue) -> None:
    url = f"{emu.url('coinbase')}{V3}/market/product_book?product_id=BTC-USD&limit=1"
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(call(http, "GET", url) for _ in range(20)))
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) >= LIMITS["public"].burst and statuses.count(429) >= 4
    assert all("<html>" in text for status, text, _ in answers if status == 429)
    # The venue sees the same IP's empty bucket as RateLimited; the gateway sends no Retry-After.
    with pytest.raises(RateLimited) as raised:
        for _ in range(3):
            await venue.fetch_order_book("BTC-USD")
    assert raised.value.retry_after_s is None


async def test_private_burst_is_limited_per_key(emu: Emulated, account: Account) -> None:
    url = f"{emu.url('coinbase')}{V3}/accounts"
    other = await emu.account("coinbase", "bystander")
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(
            *(call(http, "GET", url, jwt_for(account, "GET", url)) for _ in range(45))
        )
        statuses = [status for status, _, _ in answers]
        assert statuses.count(200) >= LIMITS["private"].burst and statuses.count(429) >= 4
        assert (await call(http, "GET", url, jwt_for(other, "GET", url)))[0] == 200


async def test_fault_429_carries_retry_after(emu: Emulated, venue: CcxtVenue) -> None:
    emu.app.network.set("coinbase", Fault(rate_limit_rate=1.0, retry_after_ms=1500, seed=1))
    with pytest.raises(RateLimited) as raised:
        await venue.fetch_order_book("BTC-USD")
    assert raised.value.retry_after_s == 2.0  # whole seconds, rounded up


# --- orders ----------------------------------------------------------------------------------------


async def test_duplicate_client_order_id_returns_the_existing_order(emu: Emulated, account: Account) -> None:
    url = f"{emu.url('coinbase')}{V3}/orders"
    async with aiohttp.ClientSession() as http:
        first = await signed(http, account, "POST", url, _limit_order("dup-raw-1"))
        again = await signed(http, account, "POST", url, _limit_order("dup-raw-1", base="0.002"))
    assert first["success"] is again["success"] is True
    assert again["success_response"]["order_id"] == first["success_response"]["order_id"]
    assert emu.app.exchange.order_count("coinbase") == 1


async def test_duplicate_through_the_venue_is_refused_without_a_second_order(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    request = OrderRequest("dup-v-1", "ETH-USD", Side.BUY, OrderType.MARKET, Decimal("0.05"))
    first = await venue.create_order(account, request)
    assert first.state is OrderState.FILLED
    with pytest.raises(DuplicateClientOrderId):
        await venue.create_order(account, request)
    assert emu.app.exchange.order_count("coinbase") == 1
    assert await venue.fetch_order(account, "ETH-USD", "dup-v-1") == first


async def test_lost_response_executes_once_and_is_found_after(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    await venue.load_markets()
    request = OrderRequest("lost-1", "BTC-USD", Side.BUY, OrderType.MARKET, Decimal("0.002"))
    emu.app.network.set("coinbase", Fault(lose_response_rate=1.0, seed=1))
    with pytest.raises(ExchangeUnavailable):
        await venue.create_order(account, request)
    emu.app.network.set("coinbase", Fault())

    found = await venue.fetch_order(account, "BTC-USD", "lost-1")
    assert found.state is OrderState.FILLED and found.filled_quantity == Decimal("0.002")
    assert emu.app.exchange.order_count("coinbase") == 1
    with pytest.raises(DuplicateClientOrderId):
        await venue.create_order(account, request)
    assert emu.app.exchange.order_count("coinbase") == 1


async def test_outage_and_5xx_are_exchange_unavailable(
    emu: Emulated, venue: CcxtVenue, account: Account
) -> None:
    await venue.load_markets()
    emu.app.network.set("coinbase", Fault(unavailable=True))
    with pytest.raises(ExchangeUnavailable):
        await venue.fetch_balances(account)
    async with aiohttp.ClientSession() as http:
        assert (await call(http, "GET", f"{emu.url('coinbase')}{V3}/market/products"))[0] == 503
    emu.app.network.set("coinbase", Fault(error_rate=1.0, seed=1))
    with pytest.raises(ExchangeUnavailable) as raised:
        await venue.create_order(
            account, OrderRequest("x5-1", "BTC-USD", Side.BUY, OrderType.MARKET, Decimal("0.001"))
        )
    assert raised.value.transport
    assert emu.app.exchange.order_count("coinbase") == 0


async def test_refusals_are_typed_by_coinbase_enums(venue: CcxtVenue, account: Account) -> None:
    with pytest.raises(InsufficientFunds):
        await venue.create_order(
            account, OrderRequest("if-1", "BTC-USD", Side.SELL, OrderType.LIMIT, Decimal(100), Decimal(90000))
        )
    with pytest.raises(InvalidOrder):  # one satoshi is under the $1 minimum notional
        await venue.create_order(
            account, OrderRequest("mn-1", "BTC-USD", Side.BUY, OrderType.MARKET, Decimal("0.00000001"))
        )
    with pytest.raises(InvalidOrder):  # not listed on coinbase: refused before anything is sent
        await venue.create_order(
            account, OrderRequest("xm-1", "XMR-USD", Side.BUY, OrderType.MARKET, Decimal(1))
        )
    with pytest.raises(InvalidOrder):
        await venue.fetch_order_book("XMR-USD")


async def test_resting_order_fills_as_maker(emu: Emulated, venue: CcxtVenue, account: Account) -> None:
    book = await venue.fetch_order_book("BTC-USD")
    assert book.best_bid is not None
    limit = (book.best_bid * Decimal("0.95")).quantize(Decimal("0.01"))
    request = OrderRequest("mk-1", "BTC-USD", Side.BUY, OrderType.LIMIT, Decimal("0.01"), limit)
    assert (await venue.create_order(account, request)).state is OrderState.OPEN

    emu.app.exchange.set_reference_price("BTC", limit * Decimal("0.97"))
    for _ in range(100):
        report = await venue.fetch_order(account, "BTC-USD", "mk-1")
        if report.state is OrderState.FILLED:
            break
        await asyncio.sleep(0.02)  # the engine's ticks run every 50 ms
    assert report.state is OrderState.FILLED
    (fill,) = report.fills
    assert fill.liquidity is Liquidity.MAKER and fill.price == limit and fill.fee_currency == "USD"
    assert fill.fee == limit * Decimal("0.01") * Decimal("0.006")
    # The trade id is stable: the same fill reads back the same.
    assert (await venue.fetch_order(account, "BTC-USD", "mk-1")).fills[0].trade_id == fill.trade_id


# --- malformed input -------------------------------------------------------------------------------


async def test_malformed_requests_get_coinbase_errors_and_the_emulator_keeps_serving(
    emu: Emulated, account: Account
) -> None:
    base = emu.url("coinbase")
    orders = f"{base}{V3}/orders"
    async with aiohttp.ClientSession() as http:

        async def post(url: str, body: str | bytes) -> tuple[int, Any]:
            status, _, parsed = await call(http, "POST", url, jwt_for(account, "POST", url), body)
            return status, parsed

        for body in (
            "{not json",
            "[]",
            json.dumps({"product_id": "BTC-USD"}),  # no client_order_id, side, configuration
            json.dumps({**_limit_order("m-1"), "order_configuration": {}}),
            json.dumps(
                {**_limit_order("m-2"), "order_configuration": {"limit_limit_gtc": {"base_size": 0.001}}}
            ),
            json.dumps(
                {**_limit_order("m-3"), "order_configuration": {"market_market_ioc": {"base_size": "1e-3"}}}
            ),
            b"\xff\xfe not utf-8",
            "[" * 30_000 + "]" * 30_000,
        ):
            status, parsed = await post(orders, body)
            assert status == 400 and parsed["error"] == "INVALID_ARGUMENT", body

        status, parsed = await post(orders, json.dumps({**_limit_order("m-4"), "product_id": "NOPE-USD"}))
        assert status == 200 and parsed["success"] is False
        assert parsed["error_response"]["preview_failure_reason"] == "PREVIEW_INVALID_PRODUCT_ID"
        status, parsed = await post(orders, json.dumps({**_limit_order("m-5"), "side": "HOLD"}))
        assert parsed["error_response"]["error"] == "INVALID_SIDE"
        status, parsed = await post(orders, json.dumps(_limit_order("m-6", price="30000.001")))
        assert parsed["error_response"]["error"] == "INVALID_PRICE_PRECISION"

        cancel = f"{base}{V3}/orders/batch_cancel"
        assert (await post(cancel, json.dumps({"order_ids": "abc"})))[0] == 400
        status, parsed = await post(cancel, json.dumps({"order_ids": [str(uuid.uuid4())]}))
        assert status == 200 and parsed["results"][0]["success"] is False
        assert parsed["results"][0]["failure_reason"] == "UNKNOWN_CANCEL_ORDER"

        unknown = f"{base}{V3}/orders/historical/{uuid.uuid4()}"
        status, _, parsed = await call(http, "GET", unknown, jwt_for(account, "GET", unknown))
        assert status == 404 and parsed["error"] == "NOT_FOUND"
        listing = f"{base}{V3}/orders/historical/batch?limit=abc"
        status, _, parsed = await call(http, "GET", listing, jwt_for(account, "GET", listing))
        assert status == 400 and parsed["error"] == "INVALID_ARGUMENT"

        for query in ("product_id=NOPE-USD", "", "product_id=BTC-USD&limit=x"):
            status, _, parsed = await call(http, "GET", f"{base}{V3}/market/product_book?{query}")
            assert status in (400, 404) and parsed["error"] in ("INVALID_ARGUMENT", "NOT_FOUND"), query

        # Still serving, and none of that placed anything.
        status, _, parsed = await call(http, "GET", f"{base}{V3}/market/products")
        assert status == 200 and any(p["product_id"] == "BTC-USD" for p in parsed["products"])
    assert emu.app.exchange.order_count("coinbase") == 0


# --- the adapter's pure parts ------------------------------------------------------------------------


def _btc() -> Market:
    return Market(
        "BTC-USD", "BTC", "USD", Decimal("0.01"), Decimal("0.00000001"), Decimal("0.0001"), Decimal(1)
    )


def test_order_body_snaps_to_the_grid_never_more_aggressively() -> None:
    buy = order_body(
        OrderRequest("a", "BTC-USD", Side.BUY, OrderType.LIMIT, Decimal("0.123456789"), Decimal("100.019")),
        _btc(),
    )
    sell = order_body(
        OrderRequest("b", "BTC-USD", Side.SELL, OrderType.LIMIT, Decimal("0.5"), Decimal("100.011")), _btc()
    )
    assert buy["order_configuration"]["limit_limit_gtc"] == {
        "base_size": "0.12345678",
        "limit_price": "100.01",
        "post_only": False,
    }
    assert sell["order_configuration"]["limit_limit_gtc"]["limit_price"] == "100.02"
    market = order_body(OrderRequest("c", "BTC-USD", Side.BUY, OrderType.MARKET, Decimal("0.001")), _btc())
    assert market["order_configuration"] == {"market_market_ioc": {"base_size": "0.001"}}
    with pytest.raises(InvalidOrder):  # rounds under the minimum quantity
        order_body(OrderRequest("d", "BTC-USD", Side.BUY, OrderType.MARKET, Decimal("0.00009999")), _btc())


def test_an_answer_for_another_order_is_a_duplicate() -> None:
    body = order_body(
        OrderRequest("e", "BTC-USD", Side.BUY, OrderType.LIMIT, Decimal("0.01"), Decimal(100)), _btc()
    )
    same = {
        "client_order_id": "e",
        "product_id": "BTC-USD",
        "side": "BUY",
        "order_configuration": {
            "limit_limit_gtc": {"base_size": "0.0100", "limit_price": "100.00", "post_only": False}
        },
    }
    assert is_order_sent(same, body)
    assert not is_order_sent({**same, "side": "SELL"}, body)
    assert not is_order_sent(
        {**same, "order_configuration": {"market_market_ioc": {"base_size": "0.01"}}}, body
    )
    bigger = {"limit_limit_gtc": {"base_size": "0.02", "limit_price": "100", "post_only": False}}
    assert not is_order_sent({**same, "order_configuration": bigger}, body)
