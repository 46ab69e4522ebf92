"""Alpaca (crypto) behind ccxt.

Orders go through ccxt's raw endpoints with Alpaca's own JSON (strings formatted here from
Decimals), so no price or quantity ever passes through ccxt's floats; the idempotency key is
Alpaca's `client_order_id`, and an order is found by it at `GET /v2/orders:by_client_order_id`.

What Alpaca does not say, and how it is read instead:
- per-fill ids come from the account's FILL activities (the order entity has totals only);
- fills carry neither fee nor liquidity: a market order, or a limit order's fill stamped no later
  than the order's submission, executed on arrival (taker); a later fill rested first (maker). The
  fee is the fill's notional at the published rate for that side, in the quote currency (USD);
- Alpaca's "not found" (40410000) is filed by ccxt under InvalidOrder: on a lookup or cancel it
  means the order is not there;
- a duplicate `client_order_id` is a plain validation refusal (422, 40010001): a refused create
  whose id is already taken is the duplicate, found by looking the id up (never by the message).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt

from services.domain.money import fmt
from services.domain.signal import Side
from services.executor.venues.base import (
    Balance,
    BookLevel,
    DuplicateClientOrderId,
    FeeSchedule,
    FillReport,
    InvalidOrder,
    Liquidity,
    Market,
    OrderBook,
    OrderNotFound,
    OrderReport,
    OrderRequest,
    OrderState,
    OrderType,
)
from services.executor.venues.live import dec, on_grid

QUOTE = "USD"
#: Tier 1 (30-day volume under $100k) of docs.alpaca.markets/docs/crypto-fees; ccxt lists the same.
FEES = FeeSchedule(maker=Decimal("0.0015"), taker=Decimal("0.0025"))
#: Alpaca refuses USD-quoted crypto buys under $10 (403 40310000 "cost basis must be >= minimal
#: amount of order 10"); the asset list does not carry it (ccxt 4.5.90's `minCostUSD`).
MIN_NOTIONAL = Decimal(10)
#: FILL activities are read from this long before the order's submission (clock skew margin).
_FILLS_FROM = timedelta(seconds=1)
_PAGE = 100

_STATES = {
    "filled": OrderState.FILLED,
    "canceled": OrderState.CANCELLED,
    "expired": OrderState.CANCELLED,
    "rejected": OrderState.CANCELLED,
    "replaced": OrderState.CANCELLED,
    "done_for_day": OrderState.CANCELLED,
}


def _exact_json(text: str) -> Any:
    """ccxt's JSON parser, with every JSON number with a fraction kept as its exact text (Alpaca's
    market data sends prices and sizes as numbers)."""
    return json.loads(text, parse_float=str)


def _market_of(info: dict[str, Any]) -> Market:
    """The mesh's market from Alpaca's raw asset (BTC/USD -> BTC-USD)."""
    base, _, quote = info["symbol"].partition("/")
    return Market(
        pair=f"{base}-{quote}",
        base=base,
        quote=quote,
        tick_size=dec(info["price_increment"], "price_increment"),
        lot_size=dec(info["min_trade_increment"], "min_trade_increment"),
        min_quantity=dec(info.get("min_order_size") or "0", "min_order_size"),
        min_notional=MIN_NOTIONAL,
    )


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


class AlpacaAdapter:
    broker = "alpaca"
    ccxt_id = "alpaca"
    #: Beyond each operation's own request (rate_limits.alpaca): an order carries no fills, so they
    #: come from the FILL activities; a cancel is a look-up by client order id, DELETE, a re-read.
    follow_up_costs = {"place_order": {"account": 1}, "fetch_order": {"account": 1}, "cancel_order": {"account": 3}}
    #: GET /v2/assets (load_markets) answers only a signed request: the venue needs an operator key.
    signed_market_reads = True

    def options(self) -> dict[str, Any]:
        return {"on_json_response": _exact_json}

    def redirect(self, exchange: ccxt.Exchange, base_url: str) -> None:
        """Every API URL (trader, market, broker) to `base_url`, keeping its path (none today)."""
        target = urlsplit(base_url)
        for name, url in list(exchange.urls["api"].items()):
            path = urlsplit(url.replace("{hostname}", "alpaca.markets")).path
            exchange.urls["api"][name] = f"{target.scheme}://{target.netloc}{path}"

    # -- markets

    def markets(self, exchange: ccxt.Exchange) -> dict[str, Market]:
        out = {}
        for info in self._assets(exchange):
            market = _market_of(info)
            out[market.pair] = market
        return out

    @staticmethod
    def _assets(exchange: ccxt.Exchange) -> Iterable[dict[str, Any]]:
        """The raw asset of every active, tradable USD-quoted crypto market."""
        for market in (exchange.markets or {}).values():
            info = market.get("info") or {}
            symbol = info.get("symbol", "")
            if (
                info.get("class") == "crypto"
                and info.get("status") == "active"
                and info.get("tradable", True)
                and symbol.endswith(f"/{QUOTE}")
            ):
                yield info

    def _asset(self, exchange: ccxt.Exchange, pair: str) -> dict[str, Any]:
        symbol = pair.replace("-", "/")
        for info in self._assets(exchange):
            if info["symbol"] == symbol:
                return info
        raise InvalidOrder(f"alpaca: {pair} is not listed")

    async def fees(self, exchange: ccxt.Exchange) -> FeeSchedule:
        return FEES  # Alpaca has no fee endpoint; the schedule is published

    async def order_book(self, exchange: ccxt.Exchange, pair: str, depth: int) -> OrderBook:
        symbol = self._asset(exchange, pair)["symbol"]
        response = await exchange.marketPublicGetV1beta3CryptoLocLatestOrderbooks({"loc": "us", "symbols": symbol})
        raw = (response.get("orderbooks") or {}).get(symbol) or {}
        bids = sorted(self._levels(raw.get("b")), key=lambda lv: lv.price, reverse=True)
        asks = sorted(self._levels(raw.get("a")), key=lambda lv: lv.price)
        cut = depth if depth > 0 else None
        return OrderBook(pair=pair, bids=tuple(bids[:cut]), asks=tuple(asks[:cut]))

    @staticmethod
    def _levels(levels: Any) -> list[BookLevel]:
        return [BookLevel(dec(lv["p"], "book price"), dec(lv["s"], "book size")) for lv in levels or ()]

    # -- orders

    async def create_order(self, exchange: ccxt.Exchange, order: OrderRequest) -> OrderReport:
        body = self._order_body(exchange, order)
        try:
            raw = await exchange.traderPrivatePostV2Orders(body)
        except ccxt.BadRequest as exc:  # 40010001/42210000: a validation refusal
            try:
                await self._lookup(exchange, order.client_order_id)
            except OrderNotFound:
                raise InvalidOrder(f"alpaca: {exc}") from exc
            raise DuplicateClientOrderId(f"alpaca: client_order_id {order.client_order_id!r} is taken") from exc
        return await self._report(exchange, raw)

    def _order_body(self, exchange: ccxt.Exchange, order: OrderRequest) -> dict[str, str]:
        """Alpaca's order JSON, at the market's precision; refused here when it cannot meet the minimums."""
        info = self._asset(exchange, order.pair)
        quantity, price = on_grid("alpaca", _market_of(info), order)
        body = {
            "symbol": info["symbol"],
            "qty": fmt(quantity),
            "side": order.side.value,
            "type": order.order_type.value,
            "time_in_force": "gtc",
            "client_order_id": order.client_order_id,
        }
        if price is not None:
            if order.side is Side.BUY and quantity * price < MIN_NOTIONAL:
                raise InvalidOrder(f"alpaca: a buy under {MIN_NOTIONAL} {QUOTE} is refused")
            body["limit_price"] = fmt(price)
        return body

    async def fetch_order(self, exchange: ccxt.Exchange, pair: str, client_order_id: str) -> OrderReport:
        return await self._report(exchange, await self._lookup(exchange, client_order_id))

    async def cancel_order(self, exchange: ccxt.Exchange, pair: str, client_order_id: str) -> OrderReport:
        raw = await self._lookup(exchange, client_order_id)
        if self._state(raw).done:
            return await self._report(exchange, raw)
        try:
            await exchange.traderPrivateDeleteV2OrdersOrderId({"order_id": raw["id"]})  # 204, no body
        except ccxt.BadRequest:
            pass  # 42210000: it finished meanwhile; the lookup below says how
        except ccxt.InvalidOrder as exc:  # 40410000
            raise OrderNotFound(f"alpaca: {exc}") from exc
        return await self._report(exchange, await self._lookup(exchange, client_order_id))

    async def _lookup(self, exchange: ccxt.Exchange, client_order_id: str) -> dict[str, Any]:
        try:
            return await exchange.request(  # type: ignore[no-any-return]
                "v2/orders:by_client_order_id", ["trader", "private"], "GET", {"client_order_id": client_order_id}
            )
        except ccxt.InvalidOrder as exc:  # 40410000, "order not found"
            raise OrderNotFound(f"alpaca: no order {client_order_id!r}: {exc}") from exc

    @staticmethod
    def _state(raw: dict[str, Any]) -> OrderState:
        status = raw.get("status", "")
        if status in _STATES:
            return _STATES[status]
        return OrderState.PARTIALLY_FILLED if dec(raw.get("filled_qty") or "0", "filled_qty") > 0 else OrderState.OPEN

    async def _report(self, exchange: ccxt.Exchange, raw: dict[str, Any]) -> OrderReport:
        base, _, quote = raw["symbol"].partition("/")
        order_type = OrderType.MARKET if raw.get("order_type", raw.get("type")) == "market" else OrderType.LIMIT
        filled = dec(raw.get("filled_qty") or "0", "filled_qty")
        fills = await self._fills(exchange, raw, order_type, quote) if filled > 0 else ()
        return OrderReport(
            venue_order_id=raw["id"],
            client_order_id=raw["client_order_id"],
            pair=f"{base}-{quote}",
            side=Side.BUY if raw["side"] == "buy" else Side.SELL,
            order_type=order_type,
            quantity=dec(raw["qty"], "qty"),
            limit_price=dec(raw["limit_price"], "limit_price") if raw.get("limit_price") is not None else None,
            state=self._state(raw),
            filled_quantity=filled,
            filled_notional=sum((f.price * f.quantity for f in fills), Decimal(0)),
            fees=sum((f.fee for f in fills), Decimal(0)),
            fills=fills,
        )

    async def _fills(
        self, exchange: ccxt.Exchange, raw: dict[str, Any], order_type: OrderType, quote: str
    ) -> tuple[FillReport, ...]:
        """The order's fills from the account's FILL activities, oldest first, until they add up."""
        submitted = _time(raw.get("submitted_at"))
        filled = dec(raw["filled_qty"], "filled_qty")
        params: dict[str, Any] = {"activity_type": "FILL", "direction": "asc", "page_size": _PAGE}
        if submitted is not None:
            params["after"] = (submitted - _FILLS_FROM).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        fills: list[FillReport] = []
        while sum((f.quantity for f in fills), Decimal(0)) < filled:
            page = await exchange.traderPrivateGetV2AccountActivitiesActivityType(params)
            for activity in page:
                if activity.get("order_id") == raw["id"]:
                    fills.append(self._fill(activity, order_type, submitted, quote))
            if len(page) < _PAGE:
                break
            params = {**params, "page_token": page[-1]["id"]}
        return tuple(fills)

    @staticmethod
    def _fill(activity: dict[str, Any], order_type: OrderType, submitted: datetime | None, quote: str) -> FillReport:
        price = dec(activity["price"], "fill price")
        quantity = dec(activity["qty"], "fill qty")
        at = _time(activity.get("transaction_time"))
        on_arrival = order_type is OrderType.MARKET or submitted is None or (at is not None and at <= submitted)
        liquidity = Liquidity.TAKER if on_arrival else Liquidity.MAKER
        rate = FEES.taker if on_arrival else FEES.maker
        return FillReport(
            trade_id=activity["id"],
            price=price,
            quantity=quantity,
            fee=price * quantity * rate,
            fee_currency=quote,
            liquidity=liquidity,
            time=at,
        )

    # -- balances

    async def balances(self, exchange: ccxt.Exchange) -> dict[str, Balance]:
        """Cash from the account (held = equity - positions - cash), crypto from the positions."""
        account = await exchange.traderPrivateGetV2Account()
        positions = await exchange.traderPrivateGetV2Positions()
        cash = dec(account["cash"], "cash")
        held = dec(account["equity"], "equity") - dec(account["position_market_value"], "position_market_value") - cash
        currency = account.get("currency") or QUOTE
        out = {currency: Balance(currency, cash, max(held, Decimal(0)))}
        for position in positions:
            symbol = position.get("symbol", "")
            asset = symbol.partition("/")[0] if "/" in symbol else symbol.removesuffix(QUOTE)
            if not asset or asset == symbol:
                continue  # not a USD-quoted crypto position
            qty = dec(position["qty"], "qty")
            available = dec(position.get("qty_available", position["qty"]), "qty_available")
            out[asset] = Balance(asset, available, qty - available)
        return out


ADAPTER = AlpacaAdapter()
