"""Kraken's spot REST API (the /0/public and /0/private methods ccxt uses) over the simulated engine.

What a client sees is Kraken's: the legacy X/Z asset codes (XXBT, ZUSD) next to the plain newer ones
(SOL, DOT), pair keys and altnames (XXBTZUSD / XBTUSD), `{"error": [...], "result": ...}` bodies,
API-Key/API-Sign signatures checked for real (HMAC-SHA512 over path + SHA256(nonce + raw body) with
the base64-decoded secret), a nonce that must grow per key, order ids like OQCLML-BW3P3-BUCMWZ,
client order ids in `cl_ord_id`, and the REST call counter per key and the trading counter per key
and pair. Kraken answers API errors with HTTP 200 and the error array ("Status codes other than
200 indicate that there was an issue with the request reaching our servers", docs.kraken.com Spot
REST introduction); only the rate limits (429, as Kraken's edge does under load), the network
faults and unknown paths use other statuses.

Deliberately not covered: order types other than market/limit, time-in-force other than GTC,
post-only and fee-in-base flags, userref filtering, margin, funding, ledgers, and the trading
counter's extra charge for cancelling young orders.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import math
import re
import secrets
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from services.domain.money import ZERO, fmt, quantize_derived
from services.domain.signal import Side
from services.emulators.base import ApiKey, Exchange, Limit, json_response
from services.simexchange.core import (
    DuplicateClientOrderId,
    InsufficientFunds,
    InvalidOrder,
    Liquidity,
    OrderNotFound,
    OrderState,
    OrderType,
    OrderView,
    PlaceOrder,
    UnknownPair,
)
from services.simexchange.listings import QUOTE, MarketSpec
from services.simexchange.network import Strike

BROKER = "kraken"

#: Kraken answers every API-level error with HTTP 200 and the error array (see the module docstring).
API_ERROR_STATUS = 200

# --- rate limits ------------------------------------------------------------------------------
#: The limits a pro-tier account gets, the most generous published tier, so no tier the executor's
#: profile (services/domain/rate_limits.py, starter by default) may be set to is looser than these.
#: - private: REST call counter per API key, max 20, decays 1/s (pro);
#:   docs.kraken.com/api/docs/guides/spot-rest-ratelimits
#: - trading: trading counter per API key and pair, threshold 180, decays 3.75/s (pro);
#:   docs.kraken.com/api/docs/guides/spot-ratelimits
#: - public: per IP. Kraken publishes no number; support.kraken.com 206548367 says 1 call per second
#:   stays within it. The burst of 15 is ours (the executor keeps to 2 per 2 s).
LIMITS = {
    "private": Limit(burst=20, per_s=1.0),
    "trading": Limit(burst=180, per_s=3.75),
    "public": Limit(burst=15, per_s=1.0),
}
#: What a private method adds to the REST call counter (1 unless listed): AddOrder/CancelOrder are
#: counted by the trading counter instead; ledger and trade-history queries add 2.
_PRIVATE_COST = {
    "AddOrder": 0,
    "CancelOrder": 0,
    "TradesHistory": 2,
    "Ledgers": 2,
    "QueryLedgers": 2,
}

# --- naming -----------------------------------------------------------------------------------
#: Mesh asset -> (Kraken asset id, altname, decimals). The legacy assets carry X (crypto) or Z (fiat)
#: prefixes; assets listed later are plain. DOGE is XDG at Kraken.
_ASSETS: dict[str, tuple[str, str, int]] = {
    "USD": ("ZUSD", "USD", 4),
    "BTC": ("XXBT", "XBT", 10),
    "ETH": ("XETH", "ETH", 10),
    "XMR": ("XXMR", "XMR", 10),
    "XRP": ("XXRP", "XRP", 8),
    "LTC": ("XLTC", "LTC", 10),
    "DOGE": ("XXDG", "XDG", 8),
    "SOL": ("SOL", "SOL", 10),
    "ADA": ("ADA", "ADA", 8),
    "AVAX": ("AVAX", "AVAX", 10),
    "LINK": ("LINK", "LINK", 10),
    "DOT": ("DOT", "DOT", 10),
    "BCH": ("BCH", "BCH", 10),
}
#: Legacy pairs are keyed by both asset ids (XXBTZUSD); the rest (and XDGUSD) by their altname.
_LEGACY_PAIRS = frozenset({"BTC", "ETH", "XMR", "XRP", "LTC"})

#: Kraken's cl_ord_id formats: a long UUID, a short (32 hex) UUID, or free ASCII text up to 18 chars.
_CL_ORD_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}|[\x21-\x7e]{1,18}"
)
#: The engine needs a client order id on every order; one Kraken was not given one gets this prefix.
_ANONYMOUS = "~kraken-"
_NUMBER = re.compile(r"\d{1,18}(\.\d{1,18})?")
_BOOK_MAX = 500  # Depth's largest `count`
_QUERY_MAX = 50  # txids per QueryOrders call
_TRADES_MAX = 20  # txids per QueryTrades call
_CLOSED_PAGE = 50  # ClosedOrders returns the 50 most recent


class KrakenError(Exception):
    """An API error: answered as `{"error": [code]}`."""

    def __init__(
        self,
        code: str,
        status: int = API_ERROR_STATUS,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.headers = headers


def _answer(result: Any) -> web.Response:
    return json_response({"error": [], "result": result})


def _refusal(error: KrakenError) -> web.Response:
    return json_response({"error": [error.code]}, status=error.status, headers=error.headers)


def _too_many(code: str, wait_s: float) -> KrakenError:
    return KrakenError(code, status=429, headers={"Retry-After": str(max(1, math.ceil(wait_s)))})


def kraken_id(prefix: str, engine_id: str) -> str:
    """A Kraken-style id (OQCLML-BW3P3-BUCMWZ) derived from an engine id: stable, so never stored twice."""
    text = base64.b32encode(hashlib.sha256(engine_id.encode()).digest()).decode()
    return f"{prefix}{text[:5]}-{text[5:10]}-{text[10:16]}"


def _decimals(step: Decimal) -> int:
    return max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]


def _number(text: Any, field: str) -> Decimal:
    """A plain positive decimal from the request, or Kraken's invalid-arguments error for `field`."""
    if not isinstance(text, str) or not _NUMBER.fullmatch(text):
        raise KrakenError(f"EGeneral:Invalid arguments:{field}")
    try:
        return Decimal(text)
    except InvalidOperation:
        raise KrakenError(f"EGeneral:Invalid arguments:{field}") from None


def _flag(value: Any) -> bool:
    return str(value).lower() in ("true", "1")


def _epoch(at: datetime) -> float:
    # Kraken's timestamps are JSON numbers (seconds, 4 decimals): time, not money.
    return round(at.timestamp(), 4)


@dataclasses.dataclass(frozen=True)
class _Pair:
    key: str
    altname: str
    wsname: str
    base_id: str
    quote_id: str
    spec: MarketSpec

    @property
    def pair_decimals(self) -> int:
        return _decimals(self.spec.tick_size)

    @property
    def lot_decimals(self) -> int:
        return _decimals(self.spec.lot_size)

    def price(self, value: Decimal) -> str:
        return f"{value:.{self.pair_decimals}f}"

    def volume(self, value: Decimal) -> str:
        return f"{value:.{self.lot_decimals}f}"

    def asset_pair(self, fees: tuple[Decimal, Decimal]) -> dict[str, Any]:
        maker, taker = (float(fee * 100) for fee in fees)  # Kraken publishes fee tiers as JSON numbers
        return {
            "altname": self.altname,
            "wsname": self.wsname,
            "aclass_base": "currency",
            "base": self.base_id,
            "aclass_quote": "currency",
            "quote": self.quote_id,
            "lot": "unit",
            "cost_decimals": _ASSETS[QUOTE][2] + 1,
            "pair_decimals": self.pair_decimals,
            "lot_decimals": self.lot_decimals,
            "lot_multiplier": 1,
            "leverage_buy": [],
            "leverage_sell": [],
            "fees": [[0, taker]],
            "fees_maker": [[0, maker]],
            "fee_volume_currency": "ZUSD",
            "margin_call": 80,
            "margin_stop": 40,
            "ordermin": fmt(self.spec.min_quantity),
            "costmin": fmt(self.spec.min_notional),
            "tick_size": fmt(self.spec.tick_size),
            "status": "online",
        }


def _pairs(specs: Iterable[MarketSpec]) -> dict[str, _Pair]:
    out = {}
    for spec in specs:
        base_id, base_alt, _ = _ASSETS[spec.base]
        quote_id, quote_alt, _ = _ASSETS[spec.quote]
        altname = f"{base_alt}{quote_alt}"
        key = f"{base_id}{quote_id}" if spec.base in _LEGACY_PAIRS else altname
        out[key] = _Pair(key, altname, f"{base_alt}/{quote_alt}", base_id, quote_id, spec)
    return out


class _Venue:
    """One emulated Kraken: its pairs, the nonces it saw and the ids it handed out, over `exchange`."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.engine = exchange.engine
        self.pairs = _pairs(self.engine.markets(BROKER))
        self._by_name = {name: p for p in self.pairs.values() for name in (p.key, p.altname)}
        self._by_mesh = {p.spec.pair: p for p in self.pairs.values()}
        self._nonces: dict[str, int] = {}
        #: Kraken txid -> (account, engine order id); trade txid -> (account, engine order id, engine trade id)
        self._orders: dict[str, tuple[str, str]] = {}
        self._trades: dict[str, tuple[str, str, str]] = {}
        #: account -> txids of the orders placed here, oldest first (what Open/ClosedOrders list)
        self._placed: dict[str, list[str]] = {}
        self._public: dict[str, Callable[[dict[str, Any]], Any]] = {
            "Time": self._time,
            "SystemStatus": self._system_status,
            "Assets": self._assets,
            "AssetPairs": self._asset_pairs,
            "Depth": self._depth,
        }
        self._private: dict[str, Callable[[ApiKey, dict[str, Any]], Any]] = {
            "Balance": self._balance,
            "BalanceEx": self._balance_ex,
            "AddOrder": self._add_order,
            "CancelOrder": self._cancel_order,
            "QueryOrders": self._query_orders,
            "OpenOrders": self._open_orders,
            "ClosedOrders": self._closed_orders,
            "QueryTrades": self._query_trades,
        }

    # -- the edge: parsing, authentication, rate limits ----------------------------------------

    async def public(self, request: web.Request) -> web.Response:
        handler = self._public.get(request.match_info["method"])
        if handler is None:
            return _refusal(KrakenError("EGeneral:Unknown method", status=404))
        try:
            params = (
                dict(request.query) if request.method == "GET" else _parse_body(await request.read(), request)
            )
            wait = self.exchange.buckets.take("public", request.remote or "", LIMITS["public"])
            if wait:
                raise _too_many("EGeneral:Too many requests", wait)
            return _answer(handler(params))
        except KrakenError as error:
            return _refusal(error)

    async def private(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        handler = self._private.get(method)
        if handler is None:
            return _refusal(KrakenError("EGeneral:Unknown method", status=404))
        try:
            raw = await request.read()
            key = self._authenticate(request, raw)
            wait = self.exchange.buckets.take(
                "private", key.api_key, LIMITS["private"], _PRIVATE_COST.get(method, 1)
            )
            if wait:
                raise _too_many("EAPI:Rate limit exceeded", wait)
            return _answer(handler(key, _parse_body(raw, request)))
        except KrakenError as error:
            return _refusal(error)

    def _authenticate(self, request: web.Request, raw: bytes) -> ApiKey:
        """The caller's key, once its signature and nonce check out; Kraken's EAPI error otherwise."""
        key = self.exchange.keys.get(request.headers.get("API-Key", ""))
        if key is None:
            raise KrakenError("EAPI:Invalid key")
        nonce = str(_parse_body(raw, request).get("nonce", ""))
        if not nonce.isdigit() or len(nonce) > 20:
            raise KrakenError("EAPI:Invalid nonce")
        if not _signed(key.secret, request.path, nonce, raw, request.headers.get("API-Sign", "")):
            raise KrakenError("EAPI:Invalid signature")
        if int(nonce) <= self._nonces.get(key.api_key, -1):
            raise KrakenError("EAPI:Invalid nonce")
        self._nonces[key.api_key] = int(nonce)
        return key

    # -- lookups -------------------------------------------------------------------------------

    def _pair(self, name: Any) -> _Pair:
        if not name:
            raise KrakenError("EGeneral:Invalid arguments:pair")
        pair = self._by_name.get(str(name))
        if pair is None:
            raise KrakenError("EQuery:Unknown asset pair")
        return pair

    def _view(self, account: str, *, txid: str = "", cl_ord_id: str = "") -> tuple[str, OrderView]:
        """(txid, order) of `account`'s order, by Kraken txid or client order id; OrderNotFound if none."""
        if not txid and not cl_ord_id:
            raise OrderNotFound("no order id given")
        if txid:
            owner, engine_id = self._orders.get(txid, ("", ""))
            if owner != account:
                raise OrderNotFound(txid)
            view = self.engine.get_order(BROKER, account, venue_order_id=engine_id)
        else:
            view = self.engine.get_order(BROKER, account, client_order_id=cl_ord_id)
        return self._remember(account, view), view

    def _remember(self, account: str, view: OrderView) -> str:
        txid = kraken_id("O", view.venue_order_id)
        if txid not in self._orders:
            self._orders[txid] = (account, view.venue_order_id)
            self._placed.setdefault(account, []).append(txid)
        for fill in view.fills:
            self._trades.setdefault(
                kraken_id("T", fill.trade_id),
                (account, view.venue_order_id, fill.trade_id),
            )
        return txid

    # -- rendering -----------------------------------------------------------------------------

    def _order_info(self, view: OrderView, with_trades: bool) -> dict[str, Any]:
        pair = self._by_mesh[view.pair]
        side = view.side.value
        kind = view.order_type.value
        volume = pair.volume(view.quantity)
        price = pair.price(view.limit_price) if view.limit_price is not None else "0"
        where = f"limit {price}" if view.order_type is OrderType.LIMIT else "market"
        status = {
            OrderState.OPEN: "open",
            OrderState.PARTIALLY_FILLED: "open",
            OrderState.FILLED: "closed",
            OrderState.CANCELLED: "canceled",
        }[view.state]
        average = (
            quantize_derived(view.filled_notional / view.filled_quantity) if view.filled_quantity else ZERO
        )
        info: dict[str, Any] = {
            "refid": None,
            "userref": 0,
            "status": status,
            "reason": None,
            "opentm": _epoch(view.created_at),
            "starttm": 0,
            "expiretm": 0,
            "descr": {
                "pair": pair.altname,
                "type": side,
                "ordertype": kind,
                "price": price,
                "price2": "0",
                "leverage": "none",
                "order": f"{side} {volume} {pair.altname} @ {where}",
                "close": "",
            },
            "vol": volume,
            "vol_exec": pair.volume(view.filled_quantity),
            # The engine's exact figures (Kraken rounds cost and fee to the pair's cost decimals).
            "cost": fmt(view.filled_notional),
            "fee": fmt(view.fees),
            "price": fmt(average),
            "stopprice": "0",
            "limitprice": "0",
            "misc": "",
            "oflags": "fciq",
        }
        if not view.client_order_id.startswith(_ANONYMOUS):
            info["cl_ord_id"] = view.client_order_id
        if view.state.done:
            info["closetm"] = _epoch(view.fills[-1].time if view.fills else view.created_at)
        if with_trades and view.fills:
            info["trades"] = [kraken_id("T", fill.trade_id) for fill in view.fills]
        return info

    def _orders_by_txid(self, account: str, with_trades: bool, txids: Iterable[str]) -> dict[str, Any]:
        out = {}
        for txid in txids:
            _, view = self._view(account, txid=txid)
            out[txid] = self._order_info(view, with_trades)
        return out

    # -- public methods ------------------------------------------------------------------------

    def _time(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.exchange.wall_clock()
        return {
            "unixtime": int(now.timestamp()),
            "rfc1123": now.strftime("%a, %d %b %y %H:%M:%S +0000"),
        }

    def _system_status(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": "online",
            "timestamp": self.exchange.wall_clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def _assets(self, params: dict[str, Any]) -> dict[str, Any]:
        listed = {QUOTE} | {p.spec.base for p in self.pairs.values()}
        assets = {
            asset_id: {
                "aclass": "currency",
                "altname": alt,
                "decimals": decimals,
                "display_decimals": min(decimals, 5),
                "status": "enabled",
            }
            for code, (asset_id, alt, decimals) in _ASSETS.items()
            if code in listed
        }
        wanted = [a for a in str(params.get("asset", "")).split(",") if a]
        if not wanted:
            return assets
        by_name = {name: asset_id for asset_id, row in assets.items() for name in (asset_id, row["altname"])}
        if any(name not in by_name for name in wanted):
            raise KrakenError("EQuery:Unknown asset")
        return {by_name[name]: assets[by_name[name]] for name in wanted}

    def _asset_pairs(self, params: dict[str, Any]) -> dict[str, Any]:
        fees = self.engine.fees(BROKER)
        wanted = [p for p in str(params.get("pair", "")).split(",") if p]
        pairs = [self._pair(name) for name in wanted] if wanted else list(self.pairs.values())
        return {p.key: p.asset_pair((fees.maker, fees.taker)) for p in pairs}

    def _depth(self, params: dict[str, Any]) -> dict[str, Any]:
        pair = self._pair(params.get("pair"))
        count = str(params.get("count", "100"))
        if not count.isdigit() or not 0 <= int(count) <= _BOOK_MAX:
            raise KrakenError("EGeneral:Invalid arguments:count")
        book = self.engine.book(BROKER, pair.spec.pair, int(count))  # 0: every level, as at Kraken
        at = int(book.time.timestamp())
        return {
            pair.key: {
                "asks": [[pair.price(lv.price), pair.volume(lv.quantity), at] for lv in book.asks],
                "bids": [[pair.price(lv.price), pair.volume(lv.quantity), at] for lv in book.bids],
            }
        }

    # -- private methods -----------------------------------------------------------------------

    def _balance_ex(self, key: ApiKey, params: dict[str, Any]) -> dict[str, Any]:
        return {
            _ASSETS[b.asset][0]: {
                "balance": fmt(b.free + b.locked),
                "hold_trade": fmt(b.locked),
            }
            for b in self.engine.balances(BROKER, key.account_id)
        }

    def _balance(self, key: ApiKey, params: dict[str, Any]) -> dict[str, Any]:
        return {
            _ASSETS[b.asset][0]: fmt(b.free + b.locked) for b in self.engine.balances(BROKER, key.account_id)
        }

    def _add_order(self, key: ApiKey, params: dict[str, Any]) -> dict[str, Any]:
        pair = self._pair(params.get("pair"))
        command = self._order_command(pair, params)
        description = f"{command.side.value} {pair.volume(command.quantity)} {pair.altname} @ " + (
            f"limit {pair.price(command.limit_price)}" if command.limit_price is not None else "market"
        )
        if _flag(params.get("validate", "")):
            return {"descr": {"order": description}}
        wait = self.exchange.buckets.take("trading", f"{key.api_key}/{pair.key}", LIMITS["trading"])
        if wait:
            raise _too_many("EOrder:Rate limit exceeded", wait)
        try:
            view = self.engine.place_order(BROKER, key.account_id, command)
        except DuplicateClientOrderId:
            raise KrakenError("EOrder:Duplicate order") from None
        except InsufficientFunds:
            raise KrakenError("EOrder:Insufficient funds") from None
        except UnknownPair:
            raise KrakenError("EQuery:Unknown asset pair") from None
        except InvalidOrder as exc:  # what the checks above did not catch (a market order's notional)
            raise KrakenError(
                "EGeneral:Invalid arguments:price"
                if exc.field == "limit_price"
                else "EOrder:Cost minimum not met"
            ) from None
        txid = self._remember(key.account_id, view)
        self.exchange.lose_response()
        return {"descr": {"order": description}, "txid": [txid]}

    def _order_command(self, pair: _Pair, params: dict[str, Any]) -> PlaceOrder:
        """The engine's command for an AddOrder, after Kraken's own checks, in Kraken's words."""
        side = params.get("type")
        if side not in ("buy", "sell"):
            raise KrakenError("EGeneral:Invalid arguments:type")
        kind = params.get("ordertype")
        if kind not in ("market", "limit"):
            raise KrakenError("EGeneral:Invalid arguments:ordertype")
        if str(params.get("timeinforce", "GTC")).upper() != "GTC":
            raise KrakenError("EGeneral:Invalid arguments:timeinforce")
        if any(flag not in ("", "fciq") for flag in str(params.get("oflags", "")).split(",")):
            raise KrakenError("EGeneral:Invalid arguments:oflags")
        cl_ord_id = str(params.get("cl_ord_id", ""))
        if "cl_ord_id" in params and not _CL_ORD_ID.fullmatch(cl_ord_id):
            raise KrakenError("EGeneral:Invalid arguments:cl_ord_id")
        if "userref" in params and not re.fullmatch(r"-?\d{1,10}", str(params["userref"])):
            raise KrakenError("EGeneral:Invalid arguments:userref")
        spec = pair.spec
        volume = _number(params.get("volume"), "volume")
        if volume <= 0 or _decimals(volume) > pair.lot_decimals:
            raise KrakenError("EGeneral:Invalid arguments:volume")
        if volume < spec.min_quantity:
            raise KrakenError("EOrder:Order minimum not met")
        price = None
        if kind == "limit":
            price = _number(params.get("price"), "price")
            if price <= 0:
                raise KrakenError("EGeneral:Invalid arguments:price")
            if _decimals(price) > pair.pair_decimals or price % spec.tick_size:
                raise KrakenError(
                    f"EOrder:Invalid price:{pair.altname} price can only be specified up to"
                    f" {pair.pair_decimals} decimals."
                )
            if volume * price < spec.min_notional:
                raise KrakenError("EOrder:Cost minimum not met")
        return PlaceOrder(
            client_order_id=cl_ord_id or f"{_ANONYMOUS}{uuid.uuid4().hex}",
            pair=spec.pair,
            side=Side(side),
            order_type=OrderType(kind),
            quantity=volume,
            limit_price=price,
        )

    def _cancel_order(self, key: ApiKey, params: dict[str, Any]) -> dict[str, Any]:
        txid, cl_ord_id = str(params.get("txid", "")), str(params.get("cl_ord_id", ""))
        if bool(txid) == bool(cl_ord_id):
            raise KrakenError("EGeneral:Invalid arguments")
        try:
            txid, view = self._view(key.account_id, txid=txid, cl_ord_id=cl_ord_id)
        except OrderNotFound:
            raise KrakenError("EOrder:Unknown order") from None
        wait = self.exchange.buckets.take(
            "trading",
            f"{key.api_key}/{self._by_mesh[view.pair].key}",
            LIMITS["trading"],
        )
        if wait:
            raise _too_many("EOrder:Rate limit exceeded", wait)
        if view.state.done:
            return {"count": 0}  # nothing left to cancel
        self.engine.cancel_order(BROKER, key.account_id, venue_order_id=view.venue_order_id)
        return {"count": 1}

    def _query_orders(self, key: ApiKey, params: dict[str, Any]) -> dict[str, Any]:
        txids = [t for t in str(params.get("txid", "")).split(",") if t]
        if not txids or len(txids) > _QUERY_MAX:
            raise KrakenError("EGeneral:Invalid arguments:txid")
        if "userref" in params and not re.fullmatch(r"-?\d{1,10}", str(params["userref"])):
            raise KrakenError("EGeneral:Invalid arguments:userref")
        try:
            return self._orders_by_txid(key.account_id, _flag(params.get("trades", "")), txids)
        except OrderNotFound:
            raise KrakenError("EOrder:Invalid order") from None

    def _listed(self, key: ApiKey, params: dict[str, Any], done: bool) -> list[tuple[str, OrderView]]:
        """The open (or closed) orders of the key's account, newest first, filtered by cl_ord_id."""
        account = key.account_id
        if "cl_ord_id" in params:
            try:
                found = [self._view(account, cl_ord_id=str(params["cl_ord_id"]))]
            except OrderNotFound:
                found = []
        else:
            found = [self._view(account, txid=t) for t in reversed(self._placed.get(account, []))]
        return [(txid, view) for txid, view in found if view.state.done == done]

    def _open_orders(self, key: ApiKey, params: dict[str, Any]) -> dict[str, Any]:
        with_trades = _flag(params.get("trades", ""))
        return {
            "open": {
                txid: self._order_info(view, with_trades) for txid, view in self._listed(key, params, False)
            }
        }

    def _closed_orders(self, key: ApiKey, params: dict[str, Any]) -> dict[str, Any]:
        with_trades = _flag(params.get("trades", ""))
        closed = self._listed(key, params, True)
        page = closed[:_CLOSED_PAGE]
        return {
            "closed": {txid: self._order_info(view, with_trades) for txid, view in page},
            "count": len(closed),
        }

    def _query_trades(self, key: ApiKey, params: dict[str, Any]) -> dict[str, Any]:
        txids = [t for t in str(params.get("txid", "")).split(",") if t]
        if not txids or len(txids) > _TRADES_MAX:
            raise KrakenError("EGeneral:Invalid arguments:txid")
        out = {}
        for txid in txids:
            account, engine_order, engine_trade = self._trades.get(txid, ("", "", ""))
            if account != key.account_id:
                raise KrakenError("EGeneral:Invalid arguments:txid")
            view = self.engine.get_order(BROKER, account, venue_order_id=engine_order)
            fill = next(f for f in view.fills if f.trade_id == engine_trade)
            pair = self._by_mesh[view.pair]
            out[txid] = {
                "ordertxid": kraken_id("O", engine_order),
                "postxid": kraken_id("T", f"position:{engine_trade}"),
                "pair": pair.key,
                "time": _epoch(fill.time),
                "type": view.side.value,
                "ordertype": view.order_type.value,
                "price": pair.price(fill.price),
                "cost": fmt(fill.price * fill.quantity),
                "fee": fmt(fill.fee),
                "vol": pair.volume(fill.quantity),
                "margin": "0",
                "leverage": "0",
                "misc": "",
                "maker": fill.liquidity is Liquidity.MAKER,
            }
        return out


def _parse_body(raw: bytes, request: web.Request) -> dict[str, Any]:
    """A private call's parameters: a form (what ccxt sends) or JSON, as Kraken accepts both."""
    try:
        if request.content_type == "application/json":
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw)))
    except ValueError:  # bad JSON, bad UTF-8 and a malformed form all land here
        raise KrakenError("EGeneral:Invalid arguments") from None


def _signed(secret: str, path: str, nonce: str, raw: bytes, signature: str) -> bool:
    """Whether API-Sign is b64(HMAC-SHA512(b64decode(secret), path + SHA256(nonce + raw body)))."""
    try:
        given = base64.b64decode(signature, validate=True)
        key = base64.b64decode(secret, validate=True)
    except ValueError:
        return False
    message = path.encode() + hashlib.sha256(nonce.encode() + raw).digest()
    return hmac.compare_digest(hmac.new(key, message, hashlib.sha512).digest(), given)


class KrakenDialect:
    broker = BROKER

    def issue_key(self, account_id: str) -> ApiKey:
        """Kraken's shapes: a 56-character base64 API key and the base64 of a 64-byte secret."""
        return ApiKey(
            api_key=base64.b64encode(secrets.token_bytes(42)).decode(),
            secret=base64.b64encode(secrets.token_bytes(64)).decode(),
            account_id=account_id,
        )

    def routes(self, exchange: Exchange) -> Iterable[web.RouteDef]:
        venue = _Venue(exchange)
        return [
            web.get("/0/public/{method}", venue.public),
            web.post("/0/public/{method}", venue.public),
            web.post("/0/private/{method}", venue.private),
        ]

    def refuse(self, strike: Strike, retry_after_s: float | None) -> web.StreamResponse:
        if strike is Strike.UNAVAILABLE:
            return _refusal(KrakenError("EService:Unavailable", status=503))
        if strike is Strike.RATE_LIMITED:
            headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))} if retry_after_s else None
            return _refusal(KrakenError("EGeneral:Too many requests", status=429, headers=headers))
        return _refusal(KrakenError("EGeneral:Internal error", status=500))


DIALECT = KrakenDialect()
