"""Alpaca's REST API (crypto), over the simulated engine's "alpaca" broker.

What ccxt 4.5.90 calls (EXCHANGES.md) and what the live adapter adds:

- trading API: `GET /v2/assets`, `POST /v2/orders`, `GET /v2/orders/{id}`,
  `GET /v2/orders:by_client_order_id`, `DELETE /v2/orders/{id}` (204), `GET /v2/account`,
  `GET /v2/positions`, `GET /v2/account/activities/FILL` (per-fill ids, for the adapter);
- market data API: `GET /v1beta3/crypto/{loc}/latest/orderbooks` (ccxt sends it unauthenticated).

Alpaca signs nothing: every trading request carries the key id and the secret in plaintext headers,
which are checked here (the secret in constant time). Errors are Alpaca's own
`{"code": <8 digits>, "message": ...}` bodies, whose codes ccxt maps to its exception classes.

Deliberate differences from the real exchange, because the engine is the truth:
- an order is executed synchronously, so `POST /v2/orders` answers with its state after
  execution (the real API answers `pending_new`/`accepted` and fills a moment later);
- fees are charged in USD by the engine (the real exchange takes crypto fees from the asset the
  trade credits); no fee activities (CFEE) are served;
- only orders placed through this dialect are listed by the activities endpoint;
- `qty` orders only (no `notional`), `market` and `limit` only, time in force `gtc` or `ioc`.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import math
import secrets
import string
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from aiohttp import web

from services.domain.money import BadDecimal, fmt, parse_positive
from services.domain.signal import Side
from services.emulators.base import ApiKey, Exchange, Limit, json_response
from services.simexchange import core
from services.simexchange.listings import MarketSpec
from services.simexchange.network import Strike

BROKER = "alpaca"
QUOTE = "USD"

#: The published limits (docs.alpaca.markets/docs/api-rate-limits): trading API 200 requests per
#: minute per account; market data (Basic plan) 200 per minute, counted per IP here because ccxt
#: reads the crypto book unauthenticated. As token buckets of 200 refilled at 200/60 per second
#: they never refuse what the executor's 200-per-any-60-s windows (domain/rate_limits.py) let go.
LIMITS: dict[str, Limit] = {
    "trading": Limit(burst=200, per_s=200 / 60),
    "market_data": Limit(burst=200, per_s=200 / 60),
}

#: Alpaca refuses USD-quoted crypto buys under this notional (403 40310000, "cost basis must be >=
#: minimal amount of order 10"; ccxt 4.5.90's `minCostUSD`, verified live by ccxt). Sells are not floored.
MIN_BUY_NOTIONAL_USD = Decimal(10)

_ID_NAMESPACE = uuid.UUID("6f1b5d1e-51a5-4a6b-9f43-3a1f0c2d7e10")
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_CLIENT_ORDER_ID_MAX = 128
_TIME_IN_FORCE = ("gtc", "ioc")
_STATUS = {
    core.OrderState.OPEN: "new",
    core.OrderState.PARTIALLY_FILLED: "partially_filled",
    core.OrderState.FILLED: "filled",
    core.OrderState.CANCELLED: "canceled",
}


# --- Alpaca's answers -------------------------------------------------------------------------


def _error(status: int, code: int, message: str, **extra: Any) -> web.Response:
    return json_response({"code": code, "message": message, **extra}, status=status)


def _unauthorized() -> web.Response:
    return _error(401, 40110000, "request is not authorized")


def _invalid(message: str) -> web.Response:
    """Alpaca's validation refusal (422, 40010001): ccxt raises BadRequest."""
    return _error(422, 40010001, message)


def _not_found() -> web.Response:
    return _error(404, 40410000, "order not found")


def _rate_limited(retry_after_s: float | None, limit: Limit | None = None, reset_in_s: float = 0.0) -> web.Response:
    """A 429. Alpaca's own carry the window and when it resets (unix seconds), not Retry-After;
    an injected fault's carries Retry-After when it gives one."""
    headers = {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(0, math.ceil(retry_after_s)))
    if limit is not None:
        headers["X-RateLimit-Limit"] = str(int(limit.burst))
        headers["X-RateLimit-Remaining"] = "0"
        headers["X-RateLimit-Reset"] = str(math.ceil(time.time() + reset_in_s))
    return json_response({"code": 42910000, "message": "rate limit exceeded"}, status=429, headers=headers)


def _iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _symbol(pair: str) -> str:
    """"BTC-USD" -> "BTC/USD" (the asset and order symbol)."""
    base, _, quote = pair.partition("-")
    return f"{base}/{quote}"


def _pair(symbol: str) -> str:
    base, _, quote = symbol.partition("/")
    return f"{base}-{quote}"


def _uuid(kind: str, name: str) -> str:
    """Alpaca's ids are UUIDs; derived from the engine's ids so they are stable across calls."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{kind}:{name}"))


# --- the dialect ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Placed:
    """What Alpaca knows about an order that the engine does not keep."""

    client_order_id: str
    time_in_force: str


class _Api:
    """Alpaca's handlers for one engine broker; holds the order ids this front end handed out."""

    def __init__(self, exchange: Exchange) -> None:
        self.x = exchange
        self.engine = exchange.engine
        #: Alpaca order id -> (account, engine order id)
        self._orders: dict[str, tuple[str, str]] = {}
        #: account -> client order id -> what was asked, for orders placed through this API, oldest first
        self._placed: dict[str, dict[str, _Placed]] = {}

    # -- the edge: keys and limits

    def _authenticate(self, request: web.Request) -> ApiKey | web.Response:
        key_id = request.headers.get("APCA-API-KEY-ID", "")
        secret = request.headers.get("APCA-API-SECRET-KEY", "")
        key = self.x.keys.get(key_id) if key_id else None
        # Compare even for an unknown key, so timing does not tell which half was wrong.
        expected = key.secret if key is not None else "x" * 40
        if not (hmac.compare_digest(secret.encode(), expected.encode()) and key is not None and secret):
            return _unauthorized()
        wait = self.x.buckets.take("trading", key.account_id, LIMITS["trading"])
        if wait > 0:
            return _rate_limited(None, LIMITS["trading"], wait)
        return key

    # -- trading API

    async def assets(self, request: web.Request) -> web.StreamResponse:
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        asset_class = request.query.get("asset_class", "")
        status = request.query.get("status", "")
        if asset_class not in ("", "crypto", "us_equity", "us_option"):
            return _invalid(f"invalid asset_class: {asset_class}")
        if asset_class not in ("", "crypto") or status not in ("", "active"):
            return json_response([])  # nothing else is listed here: no equities, no inactive assets
        return json_response([self._asset(m) for m in self.engine.markets(BROKER)])

    def _asset(self, market: MarketSpec) -> dict[str, Any]:
        symbol = _symbol(market.pair)
        return {
            "id": _uuid("asset", symbol),
            "class": "crypto",
            "exchange": "CRYPTO",
            "symbol": symbol,
            "name": f"{market.base} / US Dollar",
            "status": "active",
            "tradable": True,
            "marginable": False,
            "maintenance_margin_requirement": 100,
            "shortable": False,
            "easy_to_borrow": False,
            "fractionable": True,
            "attributes": [],
            "min_order_size": fmt(market.min_quantity),
            "min_trade_increment": fmt(market.lot_size),
            "price_increment": fmt(market.tick_size),
        }

    async def place(self, request: web.Request) -> web.StreamResponse:
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        try:
            # Numbers sent as JSON numbers are read exactly, never through a float.
            body = json.loads(await request.text(), parse_float=Decimal)
        except (ValueError, UnicodeDecodeError):
            return _error(400, 40010000, "request body format is invalid")
        if not isinstance(body, dict):
            return _error(400, 40010000, "request body format is invalid")
        parsed = self._order_command(body)
        if isinstance(parsed, web.Response):
            return parsed
        command, time_in_force = parsed
        refusal = self._below_minimum(command)
        if refusal is not None:
            return refusal
        try:
            view = self.engine.place_order(BROKER, key.account_id, command)
        except core.DuplicateClientOrderId:
            return _invalid("client_order_id must be unique")
        except core.InsufficientFunds as exc:
            return _error(
                403,
                40310000,
                f"insufficient balance for {exc.asset} (requested: {fmt(exc.needed)}, available: {fmt(exc.available)})",
                available=fmt(exc.available),
                balance=fmt(exc.available),
                symbol=exc.asset,
            )
        except core.UnknownPair:
            return _invalid(f"asset {body.get('symbol')} not found")
        except core.InvalidOrder as exc:
            return _invalid(str(exc))
        self._placed.setdefault(key.account_id, {})[command.client_order_id] = _Placed(command.client_order_id, time_in_force)
        if time_in_force == "ioc" and not view.state.done:
            view = self.engine.cancel_order(BROKER, key.account_id, client_order_id=command.client_order_id)
        self.x.lose_response()
        return json_response(self._order(key.account_id, view))

    def _order_command(self, body: dict[str, Any]) -> tuple[core.PlaceOrder, str] | web.Response:
        """Alpaca's order body -> the engine's command, or Alpaca's refusal of the body."""
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            return _invalid("symbol is required")
        if body.get("notional") is not None:
            return _invalid("notional orders are not supported; use qty")
        side = body.get("side")
        if side not in ("buy", "sell"):
            return _invalid("side must be buy or sell")
        order_type = body.get("type", body.get("order_type"))
        if order_type not in ("market", "limit"):
            return _invalid("invalid order type for crypto order")
        time_in_force = body.get("time_in_force")
        if time_in_force not in _TIME_IN_FORCE:
            return _error(422, 42210000, "invalid crypto time_in_force")
        client_order_id = body.get("client_order_id") or f"{uuid.uuid4()}"
        if not isinstance(client_order_id, str) or len(client_order_id) > _CLIENT_ORDER_ID_MAX:
            return _invalid(f"client_order_id must be a string of at most {_CLIENT_ORDER_ID_MAX} characters")
        try:
            quantity = parse_positive(_text(body.get("qty")), "qty")
            limit_price = None
            if order_type == "limit":
                limit_price = parse_positive(_text(body.get("limit_price")), "limit_price")
            elif body.get("limit_price") is not None:
                return _invalid("limit_price is not allowed for market orders")
        except BadDecimal as exc:
            return _invalid(str(exc))
        if "/" not in symbol:
            return _invalid(f"asset {symbol} not found")
        command = core.PlaceOrder(
            client_order_id=client_order_id,
            pair=_pair(symbol),
            side=Side.BUY if side == "buy" else Side.SELL,
            order_type=core.OrderType.MARKET if order_type == "market" else core.OrderType.LIMIT,
            quantity=quantity,
            limit_price=limit_price,
        )
        return command, time_in_force

    def _below_minimum(self, command: core.PlaceOrder) -> web.Response | None:
        """Alpaca's own floor on USD buys, judged at the limit or at the best ask."""
        listed = {m.pair for m in self.engine.markets(BROKER)}
        if command.side is not Side.BUY or command.pair not in listed or not command.pair.endswith(f"-{QUOTE}"):
            return None  # sells are not floored; an unlisted pair is refused below, as unknown
        price = command.limit_price
        if price is None:
            try:
                asks = self.engine.book(BROKER, command.pair, depth=1).asks
            except core.SimExchangeError:
                return None  # the engine refuses it below, with its own answer
            price = asks[0].price if asks else None
        if price is not None and command.quantity * price < MIN_BUY_NOTIONAL_USD:
            return _error(403, 40310000, f"cost basis must be >= minimal amount of order {fmt(MIN_BUY_NOTIONAL_USD)}")
        return None

    async def get_by_id(self, request: web.Request) -> web.StreamResponse:
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        found = self._find(key.account_id, venue_id=request.match_info["order_id"])
        return found if isinstance(found, web.Response) else json_response(self._order(key.account_id, found))

    async def get_by_client_id(self, request: web.Request) -> web.StreamResponse:
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        client_order_id = request.query.get("client_order_id", "")
        if not client_order_id:
            return _invalid("client_order_id is required")
        found = self._find(key.account_id, client_id=client_order_id)
        return found if isinstance(found, web.Response) else json_response(self._order(key.account_id, found))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        found = self._find(key.account_id, venue_id=request.match_info["order_id"])
        if isinstance(found, web.Response):
            return found
        if found.state.done:
            return _error(422, 42210000, f'order is already in "{_STATUS[found.state]}" state')
        self.engine.cancel_order(BROKER, key.account_id, venue_order_id=found.venue_order_id)
        return web.Response(status=204)

    def _find(self, account_id: str, *, venue_id: str = "", client_id: str = "") -> core.OrderView | web.Response:
        if venue_id:
            owner, engine_id = self._orders.get(venue_id, ("", ""))
            if owner != account_id:
                return _not_found()
            return self.engine.get_order(BROKER, account_id, venue_order_id=engine_id)
        try:
            return self.engine.get_order(BROKER, account_id, client_order_id=client_id)
        except core.OrderNotFound:
            return _not_found()

    def _order(self, account_id: str, view: core.OrderView) -> dict[str, Any]:
        """Alpaca's order entity for an engine order (and the id it answers to from now on)."""
        order_id = _uuid("order", view.venue_order_id)
        self._orders[order_id] = (account_id, view.venue_order_id)
        placed = self._placed.get(account_id, {}).get(view.client_order_id)
        symbol = _symbol(view.pair)
        average = view.filled_notional / view.filled_quantity if view.filled_quantity else None
        last_fill = view.fills[-1].time if view.fills else None
        order_type = view.order_type.value
        return {
            "id": order_id,
            "client_order_id": view.client_order_id,
            "created_at": _iso(view.created_at),
            "updated_at": _iso(last_fill or view.created_at),
            "submitted_at": _iso(view.created_at),
            "filled_at": _iso(last_fill) if view.state is core.OrderState.FILLED else None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": _uuid("asset", symbol),
            "symbol": symbol,
            "asset_class": "crypto",
            "notional": None,
            "qty": fmt(view.quantity),
            "filled_qty": fmt(view.filled_quantity),
            "filled_avg_price": fmt(average) if average is not None else None,
            "order_class": "",
            "order_type": order_type,
            "type": order_type,
            "side": view.side.value,
            "time_in_force": placed.time_in_force if placed else "gtc",
            "limit_price": fmt(view.limit_price) if view.limit_price is not None else None,
            "stop_price": None,
            "status": _STATUS[view.state],
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }

    async def account(self, request: web.Request) -> web.StreamResponse:
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        balances = {b.asset: b for b in self.engine.balances(BROKER, key.account_id)}
        cash = balances.get(QUOTE)
        free = cash.free if cash else Decimal(0)
        held = cash.locked if cash else Decimal(0)
        positions = sum((value for *_, value in self._positions(balances)), Decimal(0))
        equity = free + held + positions
        return json_response(
            {
                "id": _uuid("account", key.account_id),
                "account_number": key.account_id,
                "status": "ACTIVE",
                "crypto_status": "ACTIVE",
                "currency": QUOTE,
                # Cash excludes what open orders hold (as ccxt reads it: EXCHANGES.md); equity minus
                # the positions' value is cash plus those holds.
                "cash": fmt(free),
                "buying_power": fmt(free),
                "non_marginable_buying_power": fmt(free),
                "equity": fmt(equity),
                "last_equity": fmt(equity),
                "long_market_value": fmt(positions),
                "short_market_value": "0",
                "position_market_value": fmt(positions),
                "portfolio_value": fmt(equity),
                "multiplier": "1",
                "trading_blocked": False,
                "transfers_blocked": False,
                "account_blocked": False,
                "shorting_enabled": False,
                "pattern_day_trader": False,
            }
        )

    def _positions(self, balances: dict[str, core.BalanceView]) -> Iterable[tuple[str, Decimal, Decimal, Decimal, Decimal]]:
        """(asset, qty, qty_available, price, market value) of every crypto holding above zero."""
        for market in self.engine.markets(BROKER):
            balance = balances.get(market.base)
            if balance is None or balance.free + balance.locked <= 0:
                continue
            bids = self.engine.book(BROKER, market.pair, depth=1).bids
            price = bids[0].price if bids else Decimal(0)
            qty = balance.free + balance.locked
            yield market.base, qty, balance.free, price, qty * price

    async def positions(self, request: web.Request) -> web.StreamResponse:
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        balances = {b.asset: b for b in self.engine.balances(BROKER, key.account_id)}
        return json_response(
            [
                {
                    "asset_id": _uuid("asset", f"{asset}/{QUOTE}"),
                    "symbol": f"{asset}{QUOTE}",
                    "exchange": "CRYPTO",
                    "asset_class": "crypto",
                    "asset_marginable": False,
                    "qty": fmt(qty),
                    "qty_available": fmt(available),
                    "side": "long",
                    "market_value": fmt(value),
                    "current_price": fmt(price),
                }
                for asset, qty, available, price, value in self._positions(balances)
            ]
        )

    async def activities(self, request: web.Request) -> web.StreamResponse:
        """`GET /v2/account/activities/FILL`: one activity per fill, paged as Alpaca pages them."""
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        if request.match_info["activity_type"] != "FILL":
            return _invalid(f"invalid activity type: {request.match_info['activity_type']}")
        query = request.query
        direction = query.get("direction", "desc")
        if direction not in ("asc", "desc"):
            return _invalid(f"invalid direction: {direction}")
        try:
            page_size = int(query.get("page_size", "100"))
            after = _parse_time(query.get("after"))
            until = _parse_time(query.get("until"))
        except ValueError as exc:
            return _error(400, 40010000, f"Invalid format for parameter: {exc}")
        if not 1 <= page_size <= 100:
            return _invalid("page_size must be between 1 and 100")
        fills = sorted(self._fills(key.account_id), key=lambda a: (a["transaction_time"], a["id"]))
        if direction == "desc":
            fills.reverse()
        rows = [
            a
            for a in fills
            if (after is None or _parse_time(a["transaction_time"]) > after)  # type: ignore[operator]
            and (until is None or _parse_time(a["transaction_time"]) < until)  # type: ignore[operator]
        ]
        token = query.get("page_token")
        if token:
            ids = [a["id"] for a in rows]
            rows = rows[ids.index(token) + 1 :] if token in ids else []
        return json_response(rows[:page_size])

    def _fills(self, account_id: str) -> Iterable[dict[str, Any]]:
        for placed in self._placed.get(account_id, {}).values():
            view = self.engine.get_order(BROKER, account_id, client_order_id=placed.client_order_id)
            order_id = self._order(account_id, view)["id"]
            cumulative = Decimal(0)
            for i, fill in enumerate(view.fills):
                cumulative += fill.quantity
                last = i == len(view.fills) - 1
                at = fill.time.astimezone(timezone.utc)
                yield {
                    "id": f"{at:%Y%m%d%H%M%S}{at.microsecond // 1000:03d}::{_uuid('fill', fill.trade_id)}",
                    "activity_type": "FILL",
                    "transaction_time": _iso(fill.time),
                    "type": "fill" if last and view.state is core.OrderState.FILLED else "partial_fill",
                    "price": fmt(fill.price),
                    "qty": fmt(fill.quantity),
                    "side": view.side.value,
                    "symbol": _symbol(view.pair),
                    "leaves_qty": fmt(view.quantity - cumulative),
                    "order_id": order_id,
                    "cum_qty": fmt(cumulative),
                    "order_status": "filled" if cumulative == view.quantity else "partially_filled",
                }

    # -- market data API

    async def orderbooks(self, request: web.Request) -> web.StreamResponse:
        wait = self.x.buckets.take("market_data", request.remote or "", LIMITS["market_data"])
        if wait > 0:
            return _rate_limited(None, LIMITS["market_data"], wait)
        if request.match_info["loc"] not in ("us", "us-1"):
            return json_response({"message": f"invalid location: {request.match_info['loc']}"}, status=400)
        symbols = [s for s in request.query.get("symbols", "").split(",") if s]
        if not symbols:
            return json_response({"message": "missing symbols"}, status=400)
        bad = [s for s in symbols if not _is_pair_symbol(s)]
        if bad:
            return json_response(
                {"message": f"Invalid symbol(s): {bad[0]} does not match ^[A-Z]+/[A-Z]+$"}, status=400
            )
        books = []
        for symbol in symbols:
            try:
                book = self.engine.book(BROKER, _pair(symbol))
            except core.UnknownPair:
                continue  # Alpaca leaves an unlisted symbol out of the answer
            books.append(f"{json.dumps(symbol)}:{_render_book(book)}")
        # Written by hand: prices and sizes are JSON numbers, and they must stay exact.
        return web.Response(text='{"orderbooks":{' + ",".join(books) + "}}", content_type="application/json")


def _render_book(book: core.BookView) -> str:
    def side(levels: Iterable[core.Level]) -> str:
        return ",".join(f'{{"p":{fmt(lv.price)},"s":{fmt(lv.quantity)}}}' for lv in levels)

    return f'{{"a":[{side(book.asks)}],"b":[{side(book.bids)}],"t":"{_iso(book.time)}"}}'


def _is_pair_symbol(symbol: str) -> bool:
    base, slash, quote = symbol.partition("/")
    return bool(slash) and base.isalpha() and base.isupper() and quote.isalpha() and quote.isupper()


def _text(value: Any) -> str:
    """A number as Alpaca takes it: a JSON string, or a JSON number (read exactly as a Decimal)."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, Decimal)):
        return str(value)
    return value if isinstance(value, str) else ""


def _parse_time(text: str | None) -> datetime | None:
    if text is None or text == "":
        return None
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


class AlpacaDialect:
    broker = BROKER

    def issue_key(self, account_id: str) -> ApiKey:
        """A paper-trading key id ("PK" + 18 upper-case characters) and a 40-character secret."""
        key_id = "PK" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18))
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        return ApiKey(key_id, secret, account_id)

    def routes(self, exchange: Exchange) -> Iterable[web.RouteDef]:
        api = _Api(exchange)
        return [
            web.get("/v2/assets", api.assets),
            web.post("/v2/orders", api.place),
            web.get("/v2/orders:by_client_order_id", api.get_by_client_id),
            web.get("/v2/orders/{order_id}", api.get_by_id),
            web.delete("/v2/orders/{order_id}", api.cancel),
            web.get("/v2/account", api.account),
            web.get("/v2/positions", api.positions),
            web.get("/v2/account/activities/{activity_type}", api.activities),
            web.get("/v1beta3/crypto/{loc}/latest/orderbooks", api.orderbooks),
        ]

    def refuse(self, strike: Strike, retry_after_s: float | None) -> web.StreamResponse:
        if strike is Strike.RATE_LIMITED:
            return _rate_limited(retry_after_s)
        if strike is Strike.UNAVAILABLE:
            # The edge answers an outage itself, in HTML, as a load balancer does.
            return web.Response(
                status=503,
                text="<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
                content_type="text/html",
            )
        return _error(500, 50010000, "internal server error occurred")


DIALECT = AlpacaDialect()
