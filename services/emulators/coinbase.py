"""Coinbase Advanced Trade (REST v3) over the simulated engine, for ccxt's `coinbase` class.

What it serves (the paths ccxt 4.5.90 uses for spot trading, EXCHANGES.md):

- public, limited per IP: `market/products`, `market/product_book`;
- private, behind an ES256 JWT and limited per API key: `transaction_summary`, `orders` (create),
  `orders/batch_cancel`, `orders/historical/{id}`, `orders/historical/batch` (list; the only way to
  find an order by client_order_id), `orders/historical/fills`, `accounts`.

Coinbase behaviour it reproduces:

- Auth: `Authorization: Bearer <JWT>`, header {alg ES256, kid = key name, nonce}, claims {iss, sub,
  nbf, exp, uri "METHOD host/path"}, signature raw r||s. Any failure is a bare `401 Unauthorized`
  (text, as Coinbase's gateway answers); ccxt keeps `http://` in the uri against a local URL, so both
  forms are accepted, but method, host and path must match the request. A nonce seen before (a
  replayed token) is refused too.
- A duplicate client_order_id does not create an order: "If the ID provided is not unique, the order
  will not be created and the order corresponding with that ID will be returned instead" (Create
  Order docs, as quoted by client libraries). The answer is the ordinary success body.
- Order rejections are HTTP 200 `{"success": false, "error_response": {...}}` carrying the
  FailureReason and PreviewFailureReason enums; malformed requests are 400 INVALID_ARGUMENT.
- 429s come from the gateway as an HTML page (coinbase-samples/advanced-trade-sdk-go#18), as do
  the edge's 502/503, so ccxt types them by status alone.

Ids: Coinbase order, trade and account ids are UUIDs; they are derived (uuid5) from the engine's
own ids, so the same engine order always has the same Coinbase id.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from services.domain.money import BadDecimal, floor_to_step, fmt, parse_decimal
from services.domain.signal import Side
from services.emulators.base import ApiKey, Exchange, Limit, json_response
from services.simexchange import core
from services.simexchange.network import Strike

log = logging.getLogger(__name__)

V3 = "/api/v3/brokerage"

#: Published limits (docs.cdp.coinbase.com/advanced-trade/docs/rest-api-rate-limits): private
#: endpoints 30 requests/s per API key, public endpoints 10 requests/s per IP. As token buckets of
#: one second's worth, these admit everything the executor's "at most N in any second" windows
#: (services/domain/rate_limits.py coinbase()) admit.
LIMITS = {
    "private": Limit(burst=30, per_s=30),
    "public": Limit(burst=10, per_s=10),
}

#: JWT rules: Coinbase's tokens live 2 minutes; a little clock skew is tolerated on nbf.
JWT_MAX_LIFETIME_S = 120
JWT_LEEWAY_S = 5
JWT_ISSUERS = frozenset({"coinbase-cloud", "cdp"})
JWT_AUDIENCE = "retail_rest_api_proxy"

LIST_LIMIT_MAX = 1000
CANCEL_BATCH_MAX = 100

_IDS = uuid.UUID("8d0b7a4e-2f1c-4c39-9a54-3c2f6f0e1b77")  # namespace of the derived ids


def _uuid(kind: str, key: str) -> str:
    return str(uuid.uuid5(_IDS, f"{kind}:{key}"))


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- answers ------------------------------------------------------------------------------------


def _unauthorized(reason: str) -> web.Response:
    """Coinbase says nothing about why; the reason goes to the emulator's log only."""
    log.info("coinbase emulator: 401", extra={"reason": reason})
    return web.Response(status=401, text="Unauthorized\n", content_type="text/plain")


def _invalid_argument(message: str, status: int = 400) -> web.Response:
    return json_response({"error": "INVALID_ARGUMENT", "error_details": message, "message": message}, status)


def _not_found(message: str) -> web.Response:
    # The body ccxt's coinbase source quotes for an unknown order id.
    return json_response({"error": "NOT_FOUND", "error_details": message, "message": message}, 404)


def _gateway_page(status: int, title: str, headers: dict[str, str] | None = None) -> web.Response:
    body = f"<html><head><title>Coinbase</title></head><body><h1>{status} {title}</h1></body></html>\n"
    return web.Response(status=status, text=body, content_type="text/html", headers=headers)


def _too_many_requests(retry_after_s: float | None = None) -> web.Response:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))} if retry_after_s else None
    return _gateway_page(429, "Too Many Requests", headers)


@dataclasses.dataclass(frozen=True)
class Rejection:
    """An order refused for its content: FailureReason, PreviewFailureReason, message."""

    error: str
    preview: str
    message: str


def _rejected(rejection: Rejection, configuration: Any) -> web.Response:
    return json_response(
        {
            "success": False,
            "failure_reason": "UNKNOWN_FAILURE_REASON",
            "order_id": "",
            "error_response": {
                "error": rejection.error,
                "message": rejection.message,
                "error_details": rejection.message,
                "preview_failure_reason": rejection.preview,
                "new_order_failure_reason": rejection.error,
            },
            "order_configuration": configuration,
        }
    )


# --- JWT (pure) ---------------------------------------------------------------------------------


class BadToken(Exception):
    pass


def _b64url(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("not base64url") from None


def _json_part(part: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url(part))
    except (UnicodeDecodeError, ValueError):
        raise BadToken("not JSON") from None
    if not isinstance(value, dict):
        raise BadToken("not a JSON object")
    return value


def _uri_matches(uri: Any, method: str, host: str, path: str) -> bool:
    """'GET api.coinbase.com/api/v3/...' on the real API; ccxt keeps 'http://' on a local URL."""
    if not isinstance(uri, str):
        return False
    sent_method, _, target = uri.partition(" ")
    target = target.removeprefix("http://")
    return sent_method == method and target == f"{host}{path}"


def verify_jwt(
    token: str, keys: Callable[[str], ApiKey | None], method: str, host: str, path: str, now: float
) -> tuple[ApiKey, str, float]:
    """The key a valid token was signed with, its nonce and its expiry; BadToken otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise BadToken("not a JWT")
    header, claims = _json_part(parts[0]), _json_part(parts[1])
    if header.get("alg") != "ES256":
        raise BadToken(f"alg {header.get('alg')!r} is not ES256")
    key = keys(str(header.get("kid", "")))
    if key is None or not isinstance(key.verifier, ec.EllipticCurvePublicKey):
        raise BadToken("unknown key")
    signature = _b64url(parts[2])
    if len(signature) != 64:
        raise BadToken("signature is not r||s")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verifier.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise BadToken("bad signature") from None
    nonce = header.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        raise BadToken("no nonce")
    if claims.get("sub") != key.api_key or claims.get("iss") not in JWT_ISSUERS:
        raise BadToken("wrong sub or iss")
    audience = claims.get("aud", [JWT_AUDIENCE])
    if JWT_AUDIENCE not in (audience if isinstance(audience, list) else [audience]):
        raise BadToken("wrong aud")
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in (nbf, exp)):
        raise BadToken("nbf/exp missing")
    if nbf > now + JWT_LEEWAY_S or exp <= now or exp - nbf > JWT_MAX_LIFETIME_S:
        raise BadToken("expired or not yet valid")
    if not _uri_matches(claims.get("uri"), method, host, path):
        raise BadToken(f"uri {claims.get('uri')!r} is not this request")
    return key, nonce, float(exp)


# --- orders: request parsing and rule checks (pure) ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class OrderAsk:
    """A create-order request, parsed. `quote_size` is set for a market buy sized in quote."""

    client_order_id: str
    product_id: str
    side: str
    configuration: dict[str, Any]
    order_type: core.OrderType
    base_size: Decimal | None
    quote_size: Decimal | None
    limit_price: Decimal | None


def parse_order(body: Any) -> OrderAsk | Rejection | str:
    """An OrderAsk; a Rejection (the order's content is refused); or why the request is malformed."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for field in ("client_order_id", "product_id", "side"):
        if not isinstance(body.get(field), str) or not body[field]:
            return f"{field} is required"
    configuration = body.get("order_configuration")
    if not isinstance(configuration, dict) or len(configuration) != 1:
        return "order_configuration must hold exactly one order type"
    if body["side"] not in ("BUY", "SELL"):
        return Rejection("INVALID_SIDE", "PREVIEW_INVALID_SIDE", "invalid side")
    ((kind, params),) = configuration.items()
    if kind not in ("market_market_ioc", "limit_limit_gtc") or not isinstance(params, dict):
        return Rejection(
            "UNSUPPORTED_ORDER_CONFIGURATION",
            "PREVIEW_INVALID_ORDER_CONFIG",
            f"unsupported order configuration {kind}",
        )
    try:
        values = {
            name: parse_decimal(params[name], name) if name in params else None
            for name in ("base_size", "quote_size", "limit_price")
        }
    except BadDecimal as exc:
        return str(exc)
    base, quote, limit = values["base_size"], values["quote_size"], values["limit_price"]
    if kind == "market_market_ioc":
        if (base is None) == (quote is None):
            return "market_market_ioc takes exactly one of base_size and quote_size"
        if quote is not None and body["side"] != "BUY":
            return Rejection(
                "UNSUPPORTED_ORDER_CONFIGURATION", "PREVIEW_INVALID_ORDER_CONFIG", "quote_size is for buys"
            )
        if limit is not None:
            return "market_market_ioc takes no limit_price"
        order_type = core.OrderType.MARKET
    else:
        if base is None or limit is None:
            return "limit_limit_gtc requires base_size and limit_price"
        if params.get("post_only") not in (None, False):
            return Rejection(
                "UNSUPPORTED_ORDER_CONFIGURATION",
                "PREVIEW_INVALID_ORDER_CONFIG",
                "post_only is not supported",
            )
        order_type = core.OrderType.LIMIT
    return OrderAsk(
        body["client_order_id"],
        body["product_id"],
        body["side"],
        configuration,
        order_type,
        base,
        quote,
        limit,
    )


def check_order(market: core.MarketSpec, base: Decimal, limit: Decimal | None) -> Rejection | None:
    """Coinbase's own reasons for what the engine would refuse (the engine only names a field)."""
    if base <= 0 or base % market.lot_size != 0:
        return Rejection(
            "INVALID_SIZE_PRECISION", "PREVIEW_INVALID_SIZE_PRECISION", "Too many decimals in order amount"
        )
    if base < market.min_quantity:
        return Rejection(
            "UNKNOWN_FAILURE_REASON", "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL", "base size too small"
        )
    if limit is not None and limit <= 0:
        return Rejection("INVALID_LIMIT_PRICE", "PREVIEW_INVALID_LIMIT_PRICE", "invalid limit price")
    if limit is not None and limit % market.tick_size != 0:
        return Rejection(
            "INVALID_PRICE_PRECISION", "PREVIEW_INVALID_PRICE_PRECISION", "Too many decimals in order price"
        )
    return None


def base_for_quote(book: core.BookView, quote: Decimal, lot: Decimal) -> Decimal:
    """How much base `quote` buys walking the asks (fees not counted), down to the lot size."""
    base, left = Decimal(0), quote
    for level in book.asks:
        if left <= 0:
            break
        take = min(level.quantity, left / level.price)
        base += take
        left -= take * level.price
    return floor_to_step(base, lot)


# --- engine views -> Coinbase JSON (pure) -------------------------------------------------------


def product_json(market: core.MarketSpec, book: core.BookView) -> dict[str, Any]:
    mid = ""
    if book.bids and book.asks:
        mid = fmt(
            ((book.bids[0].price + book.asks[0].price) / 2 / market.tick_size).to_integral_value()
            * market.tick_size
        )
    return {
        "product_id": market.pair,
        "price": mid,
        "base_increment": fmt(market.lot_size),
        "quote_increment": fmt(market.tick_size),
        "price_increment": fmt(market.tick_size),
        "base_min_size": fmt(market.min_quantity),
        "base_max_size": "1000000000",
        "quote_min_size": fmt(market.min_notional),
        "quote_max_size": "100000000",
        "base_name": market.base,
        "quote_name": "US Dollar",
        "status": "online",
        "is_disabled": False,
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "trading_disabled": False,
        "auction_mode": False,
        "product_type": "SPOT",
        "quote_currency_id": market.quote,
        "base_currency_id": market.base,
        "base_display_symbol": market.base,
        "quote_display_symbol": market.quote,
        "display_name": market.pair,
        "view_only": False,
        "alias": "",
        "alias_to": [],
        "product_venue": "CBE",
    }


def _levels(levels: Iterable[core.Level]) -> list[dict[str, str]]:
    return [{"price": fmt(lv.price), "size": fmt(lv.quantity)} for lv in levels]


def _status(view: core.OrderView) -> str:
    return {
        core.OrderState.OPEN: "OPEN",
        core.OrderState.PARTIALLY_FILLED: "OPEN",
        core.OrderState.FILLED: "FILLED",
        core.OrderState.CANCELLED: "CANCELLED",
    }[view.state]


def configuration_json(view: core.OrderView) -> dict[str, Any]:
    if view.order_type is core.OrderType.MARKET:
        return {"market_market_ioc": {"base_size": fmt(view.quantity)}}
    assert view.limit_price is not None
    return {
        "limit_limit_gtc": {
            "base_size": fmt(view.quantity),
            "limit_price": fmt(view.limit_price),
            "post_only": False,
        }
    }


def order_json(view: core.OrderView, account_id: str, fees: core.FeeSchedule) -> dict[str, Any]:
    side = "BUY" if view.side is Side.BUY else "SELL"
    filled = view.filled_quantity
    average = view.filled_notional / filled if filled else Decimal(0)
    after_fees = (
        view.filled_notional + view.fees if view.side is Side.BUY else view.filled_notional - view.fees
    )
    remaining = view.quantity - filled
    hold = Decimal(0)
    if not view.state.done:
        assert view.limit_price is not None
        hold = remaining * view.limit_price * (1 + fees.taker) if view.side is Side.BUY else remaining
    return {
        "order_id": _uuid("order", view.venue_order_id),
        "product_id": view.pair,
        "user_id": _uuid("user", account_id),
        "order_configuration": configuration_json(view),
        "side": side,
        "client_order_id": view.client_order_id,
        "status": _status(view),
        "time_in_force": "IMMEDIATE_OR_CANCEL"
        if view.order_type is core.OrderType.MARKET
        else "GOOD_UNTIL_CANCELLED",
        "created_time": _iso(view.created_at),
        "completion_percentage": fmt((filled / view.quantity * 100).quantize(Decimal("0.01"))),
        "filled_size": fmt(filled),
        "average_filled_price": fmt(average),
        "fee": "",
        "number_of_fills": str(len(view.fills)),
        "filled_value": fmt(view.filled_notional),
        "pending_cancel": False,
        "size_in_quote": False,
        "total_fees": fmt(view.fees),
        "size_inclusive_of_fees": False,
        "total_value_after_fees": fmt(after_fees),
        "trigger_status": "INVALID_ORDER_TYPE",
        "order_type": "MARKET" if view.order_type is core.OrderType.MARKET else "LIMIT",
        "reject_reason": "REJECT_REASON_UNSPECIFIED",
        "settled": view.state.done,
        "product_type": "SPOT",
        "reject_message": "",
        "cancel_message": "",
        "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": fmt(hold),
        "is_liquidation": False,
        "last_fill_time": _iso(view.fills[-1].time) if view.fills else None,
        "edit_history": [],
        "leverage": "",
        "margin_type": "UNKNOWN_MARGIN_TYPE",
        "retail_portfolio_id": _uuid("portfolio", account_id),
    }


def fill_json(view: core.OrderView, fill: core.Fill, account_id: str) -> dict[str, Any]:
    return {
        "entry_id": _uuid("entry", fill.trade_id),
        "trade_id": _uuid("trade", fill.trade_id),
        "order_id": _uuid("order", view.venue_order_id),
        "trade_time": _iso(fill.time),
        "trade_type": "FILL",
        "price": fmt(fill.price),
        "size": fmt(fill.quantity),
        "commission": fmt(fill.fee),
        "product_id": view.pair,
        "sequence_timestamp": _iso(fill.time),
        "liquidity_indicator": "MAKER" if fill.liquidity is core.Liquidity.MAKER else "TAKER",
        "size_in_quote": False,
        "user_id": _uuid("user", account_id),
        "side": "BUY" if view.side is Side.BUY else "SELL",
        "retail_portfolio_id": _uuid("portfolio", account_id),
    }


def account_json(balance: core.BalanceView, account_id: str, quote: str) -> dict[str, Any]:
    return {
        "uuid": _uuid("wallet", f"{account_id}/{balance.asset}"),
        "name": f"{balance.asset} Wallet",
        "currency": balance.asset,
        "available_balance": {"value": fmt(balance.free), "currency": balance.asset},
        "default": True,
        "active": True,
        "created_at": "2024-01-01T00:00:00.000Z",
        "updated_at": "2024-01-01T00:00:00.000Z",
        "deleted_at": None,
        "type": "ACCOUNT_TYPE_FIAT" if balance.asset == quote else "ACCOUNT_TYPE_CRYPTO",
        "ready": True,
        "hold": {"value": fmt(balance.locked), "currency": balance.asset},
        "retail_portfolio_id": _uuid("portfolio", account_id),
    }


def _page(items: list[Any], query: Any, default_limit: int) -> tuple[list[Any], str] | str:
    """One page of `items` by `limit` and the opaque `cursor` (an offset); or why they are bad."""
    try:
        limit = int(query.get("limit", default_limit))
        start = int(query.get("cursor") or 0)
    except ValueError:
        return "limit and cursor must be integers"
    if not 0 < limit <= LIST_LIMIT_MAX or start < 0:
        return f"limit must be 1..{LIST_LIMIT_MAX}"
    end = start + limit
    return items[start:end], (str(end) if end < len(items) else "")


# --- the server side -----------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PrivateHandler = Callable[[web.Request, ApiKey], Awaitable[web.StreamResponse]]


class _Api:
    """One emulator's handlers and the little state Coinbase keeps beyond the engine's."""

    def __init__(self, exchange: Exchange) -> None:
        self.x = exchange
        self.engine = exchange.engine
        self.broker = exchange.broker
        #: account -> engine ids of the orders placed through this API, oldest first
        self._orders: dict[str, list[str]] = {}
        #: Coinbase order id -> (account, engine id)
        self._by_order_id: dict[str, tuple[str, str]] = {}
        #: (key, nonce) -> expiry of the token that used it
        self._nonces: dict[tuple[str, str], float] = {}

    # -- the gate every path goes through

    def public(self, handler: Handler) -> Handler:
        async def gated(request: web.Request) -> web.StreamResponse:
            if self.x.buckets.take("public", request.remote or "?", LIMITS["public"]) > 0:
                return _too_many_requests()
            return await handler(request)

        return gated

    def private(self, handler: PrivateHandler) -> Handler:
        async def gated(request: web.Request) -> web.StreamResponse:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or not token:
                return _unauthorized("no bearer token")
            now = self.x.wall_clock().timestamp()
            try:
                key, nonce, exp = verify_jwt(
                    token, self.x.keys.get, request.method, request.host, request.path, now
                )
            except BadToken as exc:
                return _unauthorized(str(exc))
            if not self._first_use(key.api_key, nonce, exp, now):
                return _unauthorized("replayed token (nonce already used)")
            if self.x.buckets.take("private", key.api_key, LIMITS["private"]) > 0:
                return _too_many_requests()
            return await handler(request, key)

        return gated

    def _first_use(self, api_key: str, nonce: str, exp: float, now: float) -> bool:
        if len(self._nonces) > 10_000:  # forget nonces whose tokens have expired anyway
            self._nonces = {k: e for k, e in self._nonces.items() if e > now}
        if (api_key, nonce) in self._nonces:
            return False
        self._nonces[(api_key, nonce)] = exp
        return True

    # -- helpers

    def _market(self, product_id: str) -> core.MarketSpec | None:
        return next((m for m in self.engine.markets(self.broker) if m.pair == product_id), None)

    def _view(self, account: str, engine_id: str) -> core.OrderView:
        return self.engine.get_order(self.broker, account, venue_order_id=engine_id)

    def _order(self, view: core.OrderView, account: str) -> dict[str, Any]:
        return order_json(view, account, self.engine.fees(self.broker))

    def _remember(self, account: str, view: core.OrderView) -> str:
        order_id = _uuid("order", view.venue_order_id)
        if order_id not in self._by_order_id:
            self._orders.setdefault(account, []).append(view.venue_order_id)
            self._by_order_id[order_id] = (account, view.venue_order_id)
        return order_id

    def _own(self, order_id: str, account: str) -> str | None:
        """The engine id of `order_id` if it is this account's."""
        held = self._by_order_id.get(order_id)
        return held[1] if held is not None and held[0] == account else None

    # -- public

    async def products(self, request: web.Request) -> web.Response:
        kind = request.query.get("product_type", "SPOT")
        wanted = set(request.query.getall("product_ids", []))
        markets = [] if kind != "SPOT" else self.engine.markets(self.broker)
        products = [
            product_json(m, self.engine.book(self.broker, m.pair, 1))
            for m in markets
            if not wanted or m.pair in wanted
        ]
        return json_response({"products": products, "num_products": len(products)})

    async def product_book(self, request: web.Request) -> web.Response:
        product_id = request.query.get("product_id", "")
        if not product_id:
            return _invalid_argument("product_id is required")
        try:
            depth = int(request.query.get("limit", "0"))
        except ValueError:
            return _invalid_argument("limit must be an integer")
        if depth < 0:
            return _invalid_argument("limit must not be negative")
        if self._market(product_id) is None:
            return _not_found(f"ProductID {product_id} could not be found")
        book = self.engine.book(self.broker, product_id, depth)
        return json_response(
            {
                "pricebook": {
                    "product_id": product_id,
                    "bids": _levels(book.bids),
                    "asks": _levels(book.asks),
                    "time": _iso(book.time),
                }
            }
        )

    # -- private

    async def transaction_summary(self, request: web.Request, key: ApiKey) -> web.Response:
        fees = self.engine.fees(self.broker)
        tier = {
            "pricing_tier": "Advanced 1",
            "usd_from": "0",
            "usd_to": "1000",
            "taker_fee_rate": fmt(fees.taker),
            "maker_fee_rate": fmt(fees.maker),
            "aop_from": "",
            "aop_to": "",
        }
        return json_response({"total_volume": 0, "total_fees": 0, "fee_tier": tier, "has_promo_fee": False})

    async def create_order(self, request: web.Request, key: ApiKey) -> web.StreamResponse:
        try:
            body = json.loads(await request.text())
        except (UnicodeDecodeError, ValueError, RecursionError):
            return _invalid_argument("request body is not valid JSON")
        ask = parse_order(body)
        if isinstance(ask, str):
            return _invalid_argument(ask)
        configuration = body.get("order_configuration")
        if isinstance(ask, Rejection):
            return _rejected(ask, configuration)
        market = self._market(ask.product_id)
        if market is None:
            return _rejected(
                Rejection("INVALID_PRODUCT_ID", "PREVIEW_INVALID_PRODUCT_ID", "invalid product"),
                configuration,
            )
        base = ask.base_size
        if base is None:
            assert ask.quote_size is not None
            base = base_for_quote(self.engine.book(self.broker, market.pair), ask.quote_size, market.lot_size)
            if base <= 0:
                return _rejected(
                    Rejection("INVALID_NO_LIQUIDITY", "PREVIEW_INVALID_NO_LIQUIDITY", "no liquidity"),
                    configuration,
                )
        if rejection := check_order(market, base, ask.limit_price):
            return _rejected(rejection, configuration)
        command = core.PlaceOrder(
            ask.client_order_id,
            market.pair,
            Side.BUY if ask.side == "BUY" else Side.SELL,
            ask.order_type,
            base,
            ask.limit_price,
        )
        try:
            view = self.engine.place_order(self.broker, key.account_id, command)
        except core.DuplicateClientOrderId:
            # Coinbase: the order is not created; the one holding that id is returned instead.
            view = self.engine.get_order(self.broker, key.account_id, client_order_id=ask.client_order_id)
            order_id = self._remember(key.account_id, view)
            return json_response(self._created(view, order_id, configuration))
        except core.InsufficientFunds:
            return _rejected(
                Rejection(
                    "INSUFFICIENT_FUND", "PREVIEW_INSUFFICIENT_FUND", "Insufficient balance in source account"
                ),
                configuration,
            )
        except core.InvalidOrder as exc:
            # check_order passed, so what is left is the engine's minimum notional.
            reason = (
                "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL"
                if exc.field == "quantity"
                else "PREVIEW_INVALID_LIMIT_PRICE"
            )
            return _rejected(Rejection("UNKNOWN_FAILURE_REASON", reason, str(exc)), configuration)
        order_id = self._remember(key.account_id, view)
        self.x.lose_response()
        return json_response(self._created(view, order_id, configuration))

    @staticmethod
    def _created(view: core.OrderView, order_id: str, configuration: Any) -> dict[str, Any]:
        return {
            "success": True,
            "failure_reason": "UNKNOWN_FAILURE_REASON",
            "order_id": order_id,
            "success_response": {
                "order_id": order_id,
                "product_id": view.pair,
                "side": "BUY" if view.side is Side.BUY else "SELL",
                "client_order_id": view.client_order_id,
            },
            "order_configuration": configuration,
        }

    async def get_order(self, request: web.Request, key: ApiKey) -> web.Response:
        engine_id = self._own(request.match_info["order_id"], key.account_id)
        if engine_id is None:
            return _not_found("order with this orderID was not found")
        return json_response({"order": self._order(self._view(key.account_id, engine_id), key.account_id)})

    async def list_orders(self, request: web.Request, key: ApiKey) -> web.Response:
        query = request.query
        products = set(query.getall("product_ids", [])) | set(query.getall("product_id", []))
        statuses = set(query.getall("order_status", []))
        ids = set(query.getall("order_ids", []))
        views = [self._view(key.account_id, e) for e in reversed(self._orders.get(key.account_id, []))]
        orders = [
            self._order(v, key.account_id)
            for v in views
            if (not products or v.pair in products) and (not statuses or _status(v) in statuses)
        ]
        orders = [o for o in orders if not ids or o["order_id"] in ids]
        page = _page(orders, query, 100)
        if isinstance(page, str):
            return _invalid_argument(page)
        items, cursor = page
        return json_response({"orders": items, "sequence": "0", "has_next": bool(cursor), "cursor": cursor})

    async def list_fills(self, request: web.Request, key: ApiKey) -> web.Response:
        query = request.query
        ids = set(query.getall("order_ids", [])) | set(query.getall("order_id", []))
        products = set(query.getall("product_ids", [])) | set(query.getall("product_id", []))
        fills = []
        for engine_id in reversed(self._orders.get(key.account_id, [])):
            view = self._view(key.account_id, engine_id)
            if ids and _uuid("order", engine_id) not in ids or products and view.pair not in products:
                continue
            fills.extend(fill_json(view, f, key.account_id) for f in reversed(view.fills))
        page = _page(fills, query, 100)
        if isinstance(page, str):
            return _invalid_argument(page)
        items, cursor = page
        return json_response({"fills": items, "cursor": cursor})

    async def batch_cancel(self, request: web.Request, key: ApiKey) -> web.Response:
        try:
            body = json.loads(await request.text())
        except (UnicodeDecodeError, ValueError, RecursionError):
            return _invalid_argument("request body is not valid JSON")
        order_ids = body.get("order_ids") if isinstance(body, dict) else None
        if not isinstance(order_ids, list) or not order_ids or not all(isinstance(i, str) for i in order_ids):
            return _invalid_argument("order_ids must be a non-empty list of order ids")
        if len(order_ids) > CANCEL_BATCH_MAX:
            return _invalid_argument(f"at most {CANCEL_BATCH_MAX} order_ids per request")
        return json_response({"results": [self._cancel_one(key.account_id, i) for i in order_ids]})

    def _cancel_one(self, account: str, order_id: str) -> dict[str, Any]:
        engine_id = self._own(order_id, account)
        reason = "UNKNOWN_CANCEL_FAILURE_REASON"
        if engine_id is None:
            reason = "UNKNOWN_CANCEL_ORDER"
        else:
            before = self._view(account, engine_id).state
            if before is core.OrderState.FILLED:
                reason = "ORDER_IS_FULLY_FILLED"
            elif before is core.OrderState.CANCELLED:
                reason = "DUPLICATE_CANCEL_REQUEST"
            else:
                self.engine.cancel_order(self.broker, account, venue_order_id=engine_id)
        success = reason == "UNKNOWN_CANCEL_FAILURE_REASON"
        return {"success": success, "failure_reason": reason, "order_id": order_id}

    async def accounts(self, request: web.Request, key: ApiKey) -> web.Response:
        quote = core.QUOTE
        rows = [
            account_json(b, key.account_id, quote) for b in self.engine.balances(self.broker, key.account_id)
        ]
        page = _page(rows, request.query, 49)
        if isinstance(page, str):
            return _invalid_argument(page)
        items, cursor = page
        return json_response(
            {"accounts": items, "has_next": bool(cursor), "cursor": cursor, "size": len(items)}
        )


class CoinbaseDialect:
    broker = "coinbase"

    def issue_key(self, account_id: str) -> ApiKey:
        """A CDP key: the name 'organizations/<uuid>/apiKeys/<uuid>' and a P-256 key in SEC1 PEM."""
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        name = f"organizations/{uuid.uuid4()}/apiKeys/{uuid.uuid4()}"
        return ApiKey(api_key=name, secret=pem, account_id=account_id, verifier=private.public_key())

    def routes(self, exchange: Exchange) -> Iterable[web.RouteDef]:
        api = _Api(exchange)
        return [
            web.get(f"{V3}/market/products", api.public(api.products)),
            web.get(f"{V3}/market/product_book", api.public(api.product_book)),
            web.get(f"{V3}/transaction_summary", api.private(api.transaction_summary)),
            web.post(f"{V3}/orders", api.private(api.create_order)),
            web.post(f"{V3}/orders/batch_cancel", api.private(api.batch_cancel)),
            web.get(f"{V3}/orders/historical/batch", api.private(api.list_orders)),
            web.get(f"{V3}/orders/historical/fills", api.private(api.list_fills)),
            web.get(f"{V3}/orders/historical/{{order_id}}", api.private(api.get_order)),
            web.get(f"{V3}/accounts", api.private(api.accounts)),
        ]

    def refuse(self, strike: Strike, retry_after_s: float | None) -> web.StreamResponse:
        """The gateway's pages: HTML, never the API's JSON, so ccxt types them by status."""
        if strike is Strike.RATE_LIMITED:
            return _too_many_requests(retry_after_s)
        if strike is Strike.UNAVAILABLE:
            return _gateway_page(503, "Service Unavailable")
        return _gateway_page(502, "Bad Gateway")


DIALECT = CoinbaseDialect()
