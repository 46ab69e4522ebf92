"""Binance spot (REST /api/v3) over the simulated engine, as ccxt 4.5.90 speaks it (EXCHANGES.md).

What a client sees is Binance's: symbols like BTCUSDT (the engine's USD is shown as USDT), the
exchangeInfo filters, the order JSON (one shape for POST, GET and DELETE), `{"code": -NNNN, "msg"}`
errors with Binance's codes and HTTP statuses, HMAC-SHA256 signatures over the raw query string and
form body, the recvWindow check, and request-weight and order-count limits answered with 429.

Deliberately left out: every order type but LIMIT (GTC) and MARKET by quantity, order lists,
cancel-replace, websocket streams, the sapi wallet endpoints beyond the empty answers ccxt's default
load_markets asks for, RSA/Ed25519 keys, and the 418 ban that follows repeated 429s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import re
import secrets
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from services.domain.signal import Side
from services.emulators.base import ApiKey, Exchange, Limit, json_response
from services.simexchange import core
from services.simexchange.listings import MarketSpec
from services.simexchange.network import Strike

BROKER = "binance"
#: How Binance names the engine's quote currency.
QUOTE_ASSET = "USDT"

# --- rate limits ---------------------------------------------------------------------------------
# GET /api/v3/exchangeInfo "rateLimits" and developers.binance.com/docs/binance-spot-api-docs/
# rest-api/limits. Binance counts per fixed interval; a token bucket of the same size refilled over
# the interval admits every schedule the executor's sliding windows allow (services/domain/
# rate_limits.py: 6000 weight/min per IP, 50 orders/10 s and 160,000/day per account).


@dataclasses.dataclass(frozen=True)
class RateLimit:
    name: str
    per_ip: bool  # else per account
    limit: int
    interval: str  # as exchangeInfo names it
    interval_num: int
    seconds: float

    @property
    def bucket(self) -> Limit:
        return Limit(burst=self.limit, per_s=self.limit / self.seconds)


REQUEST_WEIGHT = RateLimit("REQUEST_WEIGHT", True, 6000, "MINUTE", 1, 60)
RAW_REQUESTS = RateLimit("RAW_REQUESTS", True, 61_000, "MINUTE", 5, 300)
ORDERS_10S = RateLimit("ORDERS", False, 50, "SECOND", 10, 10)
ORDERS_1D = RateLimit("ORDERS", False, 160_000, "DAY", 1, 86_400)
RATE_LIMITS = (REQUEST_WEIGHT, ORDERS_10S, ORDERS_1D, RAW_REQUESTS)

#: Request weight per endpoint (each endpoint's page on developers.binance.com).
WEIGHTS: Mapping[tuple[str, str], int] = {
    ("GET", "/api/v3/ping"): 1,
    ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/depth"): 5,  # limit 1-100; see _depth_weight
    ("POST", "/api/v3/order"): 1,
    ("GET", "/api/v3/order"): 4,
    ("DELETE", "/api/v3/order"): 1,
    ("GET", "/api/v3/account"): 20,
    ("GET", "/api/v3/myTrades"): 20,  # 5 with orderId
}

DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60_000
#: A timestamp this far ahead of the server is refused whatever the recvWindow.
MAX_AHEAD_MS = 1000
DEFAULT_DEPTH = 100
MAX_DEPTH = 5000

_NUMBER = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
_NUMBER_RE = re.compile(_NUMBER)
_CLIENT_ID = r"^[a-zA-Z0-9-_]{1,36}$"
_CLIENT_ID_RE = re.compile(_CLIENT_ID)
_PRECISION = 8  # base/quote asset precision Binance shows for every listed asset here
_EIGHT = Decimal(1).scaleb(-_PRECISION)
_KEY_ALPHABET = string.ascii_letters + string.digits


class Refused(Exception):
    """Binance's error answer: an HTTP status and a `{"code", "msg"}` body."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg, self.headers = status, code, msg, headers

    def response(self) -> web.Response:
        return json_response({"code": self.code, "msg": self.msg}, status=self.status, headers=self.headers)


def _mandatory(name: str) -> Refused:
    return Refused(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _illegal(name: str, legal: str) -> Refused:
    return Refused(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def _filter_failure(name: str) -> Refused:
    return Refused(400, -1013, f"Filter failure: {name}")


def _retry_after(seconds: float) -> dict[str, str]:
    """Binance sends whole seconds; rounding up never invites a client back too early."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


# --- pure helpers ------------------------------------------------------------------------------


def symbol_of(market: MarketSpec) -> str:
    return f"{market.base}{QUOTE_ASSET}"


def asset_name(asset: str) -> str:
    return QUOTE_ASSET if asset == core.QUOTE else asset


def fmt(value: Decimal) -> str:
    """Binance's 8-decimal strings; an exact value with more digits keeps them all (never rounded)."""
    if value.normalize().as_tuple().exponent >= -_PRECISION:  # type: ignore[operator]
        return f"{value.quantize(_EIGHT):f}"
    return f"{value.normalize():f}"


def parse_params(query: str, body: str) -> dict[str, str]:
    """Query string and form body as one parameter map; a repeated name is Binance's -1101."""
    params: dict[str, str] = {}
    for raw in (query, body):
        try:
            pairs = parse_qsl(raw, keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, -1100, "Illegal characters found in a parameter.") from None
        for name, value in pairs:
            if name in params:
                raise Refused(400, -1101, f"Duplicate values for parameter '{name}'.")
            params[name] = value
    return params


def signed_payload(query: str, body: str) -> tuple[str, str]:
    """(what was signed, the signature): the raw query string then the raw body (Binance's
    "totalParams"), with the `signature` parameter taken out and every other byte as sent."""
    signature = ""
    kept = []
    for part in (query, body):
        pieces = []
        for piece in part.split("&") if part else ():
            if piece.startswith("signature="):
                signature = piece[len("signature=") :]
            else:
                pieces.append(piece)
        kept.append("&".join(pieces))
    return kept[0] + kept[1], signature


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def check_timestamp(params: Mapping[str, str], now_ms: int) -> None:
    """Binance's timing security: refused when ahead of the server or older than recvWindow."""
    try:
        timestamp = int(params.get("timestamp", ""))
    except ValueError:
        raise _mandatory("timestamp") from None
    raw_window = params.get("recvWindow", str(DEFAULT_RECV_WINDOW_MS))
    if not raw_window.isdigit():
        raise _illegal("recvWindow", "^[0-9]{1,20}$")
    if int(raw_window) > MAX_RECV_WINDOW_MS:
        raise Refused(400, -1131, f"recvWindow must be less than {MAX_RECV_WINDOW_MS}.")
    if timestamp >= now_ms + MAX_AHEAD_MS:
        raise Refused(
            400, -1021, f"Timestamp for this request was {MAX_AHEAD_MS}ms ahead of the server's time."
        )
    if now_ms - timestamp > int(raw_window):
        raise Refused(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def number(params: Mapping[str, str], name: str) -> Decimal:
    """A mandatory positive number in Binance's notation, at most 8 decimals."""
    raw = params.get(name, "")
    if not raw:
        raise _mandatory(name)
    if not _NUMBER_RE.fullmatch(raw):
        raise _illegal(name, _NUMBER)
    value = Decimal(raw)
    if value.normalize().as_tuple().exponent < -_PRECISION:  # type: ignore[operator]
        raise Refused(400, -1111, f"Parameter '{name}' has too much precision.")
    return value


def depth_weight(limit: int) -> int:
    for upto, weight in ((100, 5), (500, 25), (1000, 50)):
        if limit <= upto:
            return weight
    return 250


def check_filters(market: MarketSpec, quantity: Decimal, price: Decimal | None) -> None:
    """exchangeInfo's LOT_SIZE, PRICE_FILTER and (for a limit order) NOTIONAL, as Binance checks
    them before the matching engine sees the order. A market order's notional is the engine's call."""
    if quantity < market.min_quantity or (quantity - market.min_quantity) % market.lot_size:
        raise _filter_failure("LOT_SIZE")
    if price is not None:
        if price < market.tick_size or (price - market.tick_size) % market.tick_size:
            raise _filter_failure("PRICE_FILTER")
        if price * quantity < market.min_notional:
            raise _filter_failure("NOTIONAL")


_STATUS = {
    core.OrderState.OPEN: "NEW",
    core.OrderState.PARTIALLY_FILLED: "PARTIALLY_FILLED",
    core.OrderState.FILLED: "FILLED",
    core.OrderState.CANCELLED: "CANCELED",
}


def seq_of(engine_id: str, marker: str) -> int:
    """Binance's ids are integers: the engine's sequence number ("<session>-O17" -> 17)."""
    return int(engine_id.rpartition(marker)[2])


def ms(when: Any) -> int:
    return int(when.timestamp() * 1000)


def order_json(order: core.OrderView, symbol: str) -> dict[str, Any]:
    """GET /api/v3/order's shape (POST and DELETE add to it)."""
    status = _STATUS[order.state]
    if status == "CANCELED" and order.order_type is core.OrderType.MARKET:
        status = "EXPIRED"  # the book ran out: Binance expires a market order's remainder
    return {
        "symbol": symbol,
        "orderId": seq_of(order.venue_order_id, "O"),
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": fmt(order.limit_price or Decimal(0)),
        "origQty": fmt(order.quantity),
        "executedQty": fmt(order.filled_quantity),
        "cummulativeQuoteQty": fmt(order.filled_notional),
        "status": status,
        "timeInForce": "GTC",
        "type": order.order_type.name,
        "side": order.side.name,
        "stopPrice": fmt(Decimal(0)),
        "icebergQty": fmt(Decimal(0)),
        "time": ms(order.created_at),
        "updateTime": ms(order.fills[-1].time if order.fills else order.created_at),
        "isWorking": True,
        "workingTime": ms(order.created_at),
        "origQuoteOrderQty": fmt(Decimal(0)),
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def trade_json(order: core.OrderView, fill: core.Fill, symbol: str) -> dict[str, Any]:
    """GET /api/v3/myTrades' shape. Commission is charged in the quote asset, as the engine does."""
    return {
        "symbol": symbol,
        "id": seq_of(fill.trade_id, "T"),
        "orderId": seq_of(order.venue_order_id, "O"),
        "orderListId": -1,
        "price": fmt(fill.price),
        "qty": fmt(fill.quantity),
        "quoteQty": fmt(fill.price * fill.quantity),
        "commission": fmt(fill.fee),
        "commissionAsset": asset_name(fill.fee_currency),
        "time": ms(fill.time),
        "isBuyer": order.side is Side.BUY,
        "isMaker": fill.liquidity is core.Liquidity.MAKER,
        "isBestMatch": True,
    }


def refusal(strike: Strike, retry_after_s: float | None) -> web.Response:
    """Binance's edge: 503 for an outage (no JSON: the request never reached the API), 500 with
    -1000 for an internal error, 429 with -1003 (and Retry-After when given) for a rate limit."""
    if strike is Strike.UNAVAILABLE:
        return web.Response(status=503, text="Service Unavailable.", content_type="text/plain")
    if strike is Strike.RATE_LIMITED:
        headers = _retry_after(retry_after_s) if retry_after_s else None
        return Refused(429, -1003, _weight_message(), headers).response()
    return Refused(500, -1000, "An unknown error occurred while processing the request.").response()


def _weight_message() -> str:
    return (
        f"Too much request weight used; current limit is {REQUEST_WEIGHT.limit} request weight per "
        f"{REQUEST_WEIGHT.interval_num} {REQUEST_WEIGHT.interval}. Please use WebSocket Streams for "
        "live updates to avoid polling the API."
    )


# --- the API over one engine -----------------------------------------------------------------

Params = dict[str, str]
Endpoint = Callable[[Params, ApiKey | None], Awaitable[Any]]


class _Api:
    def __init__(self, exchange: Exchange) -> None:
        self.x = exchange
        self.engine = exchange.engine
        #: orderId -> (account, engine order id), for lookups by Binance's integer id.
        self._orders: dict[int, tuple[str, str]] = {}

    # -- plumbing

    def _now_ms(self) -> int:
        return ms(self.x.wall_clock())

    def _markets(self) -> dict[str, MarketSpec]:
        return {symbol_of(m): m for m in self.engine.markets(BROKER)}

    def _market(self, params: Params) -> MarketSpec:
        symbol = params.get("symbol", "")
        if not symbol:
            raise _mandatory("symbol")
        market = self._markets().get(symbol)
        if market is None:
            raise Refused(400, -1121, "Invalid symbol.")
        return market

    def _charge(self, name: str, principal: str, limit: RateLimit, cost: float, refused: Refused) -> None:
        wait = self.x.buckets.take(name, principal, limit.bucket, cost)
        if wait:
            refused.headers = _retry_after(wait)
            raise refused

    def _charge_ip(self, ip: str, weight: int) -> None:
        self._charge(
            "raw",
            ip,
            RAW_REQUESTS,
            1,
            Refused(
                429,
                -1003,
                "Too many requests; current limit "
                f"of raw requests is {RAW_REQUESTS.limit} per {RAW_REQUESTS.interval_num} MINUTE.",
            ),
        )
        self._charge("weight", ip, REQUEST_WEIGHT, weight, Refused(429, -1003, _weight_message()))

    def _charge_order(self, account_id: str) -> None:
        for name, limit in (("orders_10s", ORDERS_10S), ("orders_1d", ORDERS_1D)):
            interval = f"{limit.interval_num} {limit.interval}"
            message = f"Too many new orders; current limit is {limit.limit} orders per {interval}."
            self._charge(name, account_id, limit, 1, Refused(429, -1015, message))

    def _authenticate(self, request: web.Request, params: Params, query: str, body: str) -> ApiKey:
        api_key = request.headers.get("X-MBX-APIKEY", "")
        if len(api_key) != 64 or not (api_key.isascii() and api_key.isalnum()):
            raise Refused(401, -2014, "API-key format invalid.")
        key = self.x.keys.get(api_key)
        if key is None:
            raise Refused(401, -2015, "Invalid API-key, IP, or permissions for action.")
        check_timestamp(params, self._now_ms())
        payload, signature = signed_payload(query, body)
        if not signature:
            raise _mandatory("signature")
        if not signature.isascii() or not hmac.compare_digest(signature.lower(), sign(key.secret, payload)):
            raise Refused(400, -1022, "Signature for this request is not valid.")
        return key

    def route(self, method: str, path: str, endpoint: Endpoint, signed: bool) -> web.RouteDef:
        async def serve(request: web.Request) -> web.StreamResponse:
            try:
                query = request.rel_url.raw_query_string
                try:
                    body = (await request.read()).decode("ascii")
                except UnicodeDecodeError:
                    raise Refused(400, -1100, "Illegal characters found in a parameter.") from None
                params = parse_params(query, body)
                weight = WEIGHTS.get((method, path), 1)
                if path == "/api/v3/depth":
                    weight = depth_weight(_depth_limit(params))
                elif path == "/api/v3/myTrades" and "orderId" in params:
                    weight = 5
                self._charge_ip(request.remote or "", weight)
                key = self._authenticate(request, params, query, body) if signed else None
                return json_response(await endpoint(params, key))
            except Refused as refused:
                return refused.response()

        return web.route(method, path, serve)

    # -- market data

    async def ping(self, params: Params, key: ApiKey | None) -> Any:
        return {}

    async def time(self, params: Params, key: ApiKey | None) -> Any:
        return {"serverTime": self._now_ms()}

    async def exchange_info(self, params: Params, key: ApiKey | None) -> Any:
        markets = [self._market(params)] if "symbol" in params else list(self._markets().values())
        return {
            "timezone": "UTC",
            "serverTime": self._now_ms(),
            "rateLimits": [
                {
                    "rateLimitType": r.name,
                    "interval": r.interval,
                    "intervalNum": r.interval_num,
                    "limit": r.limit,
                }
                for r in RATE_LIMITS
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_json(m) for m in markets],
        }

    async def depth(self, params: Params, key: ApiKey | None) -> Any:
        market = self._market(params)
        book = self.engine.book(BROKER, market.pair, min(_depth_limit(params), MAX_DEPTH))
        return {
            "lastUpdateId": ms(book.time),
            "bids": [[fmt(lv.price), fmt(lv.quantity)] for lv in book.bids],
            "asks": [[fmt(lv.price), fmt(lv.quantity)] for lv in book.asks],
        }

    # -- trading

    async def new_order(self, params: Params, key: ApiKey | None) -> Any:
        assert key is not None
        market = self._market(params)
        command = self._command(params, market)
        self._charge_order(key.account_id)
        try:
            order = self.engine.place_order(BROKER, key.account_id, command)
        except core.DuplicateClientOrderId:
            raise Refused(400, -2010, "Duplicate order sent.") from None
        except core.InsufficientFunds:
            raise Refused(400, -2010, "Account has insufficient balance for requested action.") from None
        except core.InvalidOrder as exc:
            # Our own filter checks passed, so what is left is the market order's notional at the mid.
            raise _filter_failure("NOTIONAL" if exc.field == "quantity" else "PRICE_FILTER") from None
        self._orders[seq_of(order.venue_order_id, "O")] = (key.account_id, order.venue_order_id)
        self.x.lose_response()
        symbol = symbol_of(market)
        answer = order_json(order, symbol)
        answer["transactTime"] = answer["workingTime"]
        answer["fills"] = [
            {
                "price": fmt(f.price),
                "qty": fmt(f.quantity),
                "commission": fmt(f.fee),
                "commissionAsset": asset_name(f.fee_currency),
                "tradeId": seq_of(f.trade_id, "T"),
            }
            for f in order.fills
        ]
        return answer

    def _command(self, params: Params, market: MarketSpec) -> core.PlaceOrder:
        """The order as the engine takes it, after the checks Binance makes on the request itself."""
        side = params.get("side", "")
        if not side:
            raise _mandatory("side")
        if side not in ("BUY", "SELL"):
            raise Refused(400, -1117, "Invalid side.")
        order_type = params.get("type", "")
        if not order_type:
            raise _mandatory("type")
        if order_type not in ("LIMIT", "MARKET"):
            raise Refused(400, -1116, "Invalid orderType.")
        client_order_id = params.get("newClientOrderId") or f"emu-{secrets.token_hex(8)}"
        if not _CLIENT_ID_RE.fullmatch(client_order_id):
            raise _illegal("newClientOrderId", _CLIENT_ID)
        quantity = number(params, "quantity")
        price: Decimal | None = None
        if order_type == "LIMIT":
            time_in_force = params.get("timeInForce", "")
            if not time_in_force:
                raise _mandatory("timeInForce")
            if time_in_force != "GTC":  # IOC and FOK exist on Binance; the engine only rests GTC
                raise Refused(400, -1115, "Invalid timeInForce.")
            price = number(params, "price")
        else:
            for name in ("price", "timeInForce"):
                if name in params:
                    raise Refused(400, -1106, f"Parameter '{name}' sent when not required.")
        check_filters(market, quantity, price)
        order_kind = core.OrderType.LIMIT if price is not None else core.OrderType.MARKET
        return core.PlaceOrder(client_order_id, market.pair, Side[side], order_kind, quantity, price)

    def _find(self, params: Params, key: ApiKey, market: MarketSpec, not_found: Refused) -> core.OrderView:
        client_order_id = params.get("origClientOrderId", "")
        raw_id = params.get("orderId", "")
        if not client_order_id and not raw_id:
            raise Refused(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        venue_order_id = ""
        if raw_id:
            if not raw_id.isdigit():
                raise _illegal("orderId", "^[0-9]{1,20}$")
            account, venue_order_id = self._orders.get(int(raw_id), ("", ""))
            if account != key.account_id:
                raise not_found
        try:
            order = self.engine.get_order(
                BROKER, key.account_id, client_order_id=client_order_id, venue_order_id=venue_order_id
            )
        except core.OrderNotFound:
            raise not_found from None
        if order.pair != market.pair:
            raise not_found
        self._orders[seq_of(order.venue_order_id, "O")] = (key.account_id, order.venue_order_id)
        return order

    async def query_order(self, params: Params, key: ApiKey | None) -> Any:
        assert key is not None
        market = self._market(params)
        order = self._find(params, key, market, Refused(400, -2013, "Order does not exist."))
        return order_json(order, symbol_of(market))

    async def cancel_order(self, params: Params, key: ApiKey | None) -> Any:
        assert key is not None
        market = self._market(params)
        unknown = Refused(400, -2011, "Unknown order sent.")
        order = self._find(params, key, market, unknown)
        if order.state.done:  # Binance cannot cancel what is no longer on the book
            raise unknown
        order = self.engine.cancel_order(BROKER, key.account_id, venue_order_id=order.venue_order_id)
        answer = order_json(order, symbol_of(market))
        answer["origClientOrderId"] = order.client_order_id
        answer["clientOrderId"] = params.get("newClientOrderId") or f"emu-{secrets.token_hex(8)}"
        answer["transactTime"] = self._now_ms()
        return answer

    async def my_trades(self, params: Params, key: ApiKey | None) -> Any:
        assert key is not None
        market = self._market(params)
        symbol = symbol_of(market)
        if "orderId" in params:
            orders = [self._find(params, key, market, Refused(400, -2013, "Order does not exist."))]
        else:
            orders = [
                self.engine.get_order(BROKER, account, venue_order_id=venue_id)
                for account, venue_id in self._orders.values()
                if account == key.account_id
            ]
        trades = [trade_json(o, f, symbol) for o in orders if o.pair == market.pair for f in o.fills]
        return sorted(trades, key=lambda t: t["id"])[: _int_param(params, "limit", 500, 1000)]

    async def account(self, params: Params, key: ApiKey | None) -> Any:
        assert key is not None
        fees = self.engine.fees(BROKER)
        return {
            "makerCommission": int(fees.maker * 10_000),
            "takerCommission": int(fees.taker * 10_000),
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt(fees.maker),
                "taker": fmt(fees.taker),
                "buyer": fmt(Decimal(0)),
                "seller": fmt(Decimal(0)),
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self._now_ms(),
            "accountType": "SPOT",
            "balances": [
                {"asset": asset_name(b.asset), "free": fmt(b.free), "locked": fmt(b.locked)}
                for b in self.engine.balances(BROKER, key.account_id)
            ],
            "permissions": ["SPOT"],
        }

    # -- what ccxt's default (not spot-only) load_markets also asks for: nothing listed there

    async def no_futures(self, params: Params, key: ApiKey | None) -> Any:
        return {"timezone": "UTC", "serverTime": self._now_ms(), "rateLimits": [], "symbols": []}

    async def empty_list(self, params: Params, key: ApiKey | None) -> Any:
        return []

    def routes(self) -> Iterable[web.RouteDef]:
        table: list[tuple[str, str, Endpoint, bool]] = [
            ("GET", "/api/v3/ping", self.ping, False),
            ("GET", "/api/v3/time", self.time, False),
            ("GET", "/api/v3/exchangeInfo", self.exchange_info, False),
            ("GET", "/api/v3/depth", self.depth, False),
            ("POST", "/api/v3/order", self.new_order, True),
            ("GET", "/api/v3/order", self.query_order, True),
            ("DELETE", "/api/v3/order", self.cancel_order, True),
            ("GET", "/api/v3/myTrades", self.my_trades, True),
            ("GET", "/api/v3/account", self.account, True),
            ("GET", "/fapi/v1/exchangeInfo", self.no_futures, False),
            ("GET", "/dapi/v1/exchangeInfo", self.no_futures, False),
            ("GET", "/sapi/v1/capital/config/getall", self.empty_list, True),
            ("GET", "/sapi/v1/margin/allPairs", self.empty_list, True),
            ("GET", "/sapi/v1/margin/isolated/allPairs", self.empty_list, True),
        ]
        return [self.route(method, path, endpoint, signed) for method, path, endpoint, signed in table]


def _int_param(params: Params, name: str, default: int, maximum: int) -> int:
    raw = params.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise _illegal(name, "^[0-9]{1,20}$")
    return min(int(raw), maximum)


def _depth_limit(params: Params) -> int:
    """Binance's default is 100 levels; more than 5000 is cut to 5000."""
    return _int_param(params, "limit", DEFAULT_DEPTH, MAX_DEPTH)


def _symbol_json(market: MarketSpec) -> dict[str, Any]:
    return {
        "symbol": symbol_of(market),
        "status": "TRADING",
        "baseAsset": market.base,
        "baseAssetPrecision": _PRECISION,
        "quoteAsset": QUOTE_ASSET,
        "quotePrecision": _PRECISION,
        "quoteAssetPrecision": _PRECISION,
        "baseCommissionPrecision": _PRECISION,
        "quoteCommissionPrecision": _PRECISION,
        "orderTypes": ["LIMIT", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "quoteOrderQtyMarketAllowed": False,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(market.tick_size),
                "maxPrice": "1000000.00000000",
                "tickSize": fmt(market.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(market.min_quantity),
                "maxQty": "9000000.00000000",
                "stepSize": fmt(market.lot_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(market.min_notional),
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


class BinanceDialect:
    broker = BROKER

    def issue_key(self, account_id: str) -> ApiKey:
        """Binance hands out 64-character alphanumeric API keys and HMAC secrets."""
        key = "".join(secrets.choice(_KEY_ALPHABET) for _ in range(64))
        secret = "".join(secrets.choice(_KEY_ALPHABET) for _ in range(64))
        return ApiKey(api_key=key, secret=secret, account_id=account_id)

    def routes(self, exchange: Exchange) -> Iterable[web.RouteDef]:
        return _Api(exchange).routes()

    def refuse(self, strike: Strike, retry_after_s: float | None) -> web.StreamResponse:
        return refusal(strike, retry_after_s)


DIALECT = BinanceDialect()
