"""Coinbase Advanced Trade through ccxt's `coinbase` class (v3 brokerage API).

Why it goes past ccxt's unified methods to the endpoint methods ccxt generates (same signing, same
transport, same error handling):

- ccxt's `create_order` takes float amounts and turns a market buy into a `quote_size` spend; the
  mesh sizes every order in base units, exactly, so the adapter sends `base_size` strings itself.
  ccxt also drops the unified clientOrderId; the raw `client_order_id` field carries ours.
- Coinbase has no lookup by client_order_id: the list endpoint (orders/historical/batch, filtered
  by product) is searched for it, and cancels go through batch_cancel with the order id found.
- Coinbase answers a duplicate client_order_id with the existing order as if it were new ("the
  order will not be created and the order corresponding with that ID will be returned instead").
  Nothing in that answer tells the two apart, so create first looks the id up among the product's
  most recent orders (one page: a re-send follows its original closely) and raises
  DuplicateClientOrderId when it is taken, which is what the executor needs to look the order up
  instead of re-sending. An answer whose order is not the one sent is a duplicate too. Whatever
  the search misses, Coinbase's own idempotency still keeps it to one order per id.
- Everything is read from Coinbase's own JSON strings: prices, sizes, fees, per-fill trade ids and
  the maker/taker liquidity indicator from the fills endpoint. Fees are charged in the quote currency.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
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
    ExchangeRejected,
    FeeSchedule,
    FillReport,
    InsufficientFunds,
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

log = logging.getLogger(__name__)

QUOTE = "USD"
#: Coinbase's entry tier ("Advanced 1": maker 0.6%, taker 1.2%), what a keyless caller is quoted;
#: with keys, the account's own tier comes from transaction_summary.
DEFAULT_FEES = FeeSchedule(maker=Decimal("0.006"), taker=Decimal("0.012"))

#: Coinbase's order states that still rest on the book.
_LIVE = frozenset({"OPEN", "PENDING", "QUEUED", "CANCEL_QUEUED"})
_DONE = {"FILLED": OrderState.FILLED, "CANCELLED": OrderState.CANCELLED, "EXPIRED": OrderState.CANCELLED}

#: The order's own content was refused (FailureReason / PreviewFailureReason enums).
_INVALID_ORDER = frozenset(
    {
        "UNSUPPORTED_ORDER_CONFIGURATION",
        "INVALID_SIDE",
        "INVALID_PRODUCT_ID",
        "INVALID_SIZE_PRECISION",
        "INVALID_PRICE_PRECISION",
        "INVALID_LIMIT_PRICE",
        "INVALID_LIMIT_PRICE_POST_ONLY",
        "INVALID_NO_LIQUIDITY",
        "PREVIEW_INVALID_SIDE",
        "PREVIEW_INVALID_ORDER_CONFIG",
        "PREVIEW_INVALID_PRODUCT_ID",
        "PREVIEW_INVALID_SIZE_PRECISION",
        "PREVIEW_INVALID_PRICE_PRECISION",
        "PREVIEW_INVALID_LIMIT_PRICE",
        "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY",
        "PREVIEW_INVALID_NO_LIQUIDITY",
        "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL",
        "PREVIEW_INVALID_BASE_SIZE_TOO_LARGE",
        "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL",
        "PREVIEW_INVALID_QUOTE_SIZE_TOO_LARGE",
        "PREVIEW_INVALID_QUOTE_SIZE_PRECISION",
        "PREVIEW_INVALID_PRICE_TOO_LARGE",
    }
)
_INSUFFICIENT = frozenset({"INSUFFICIENT_FUND", "INSUFFICIENT_FUNDS", "PREVIEW_INSUFFICIENT_FUND"})
#: batch_cancel reasons that mean "already done": the order is reported as it stands.
_ALREADY_DONE = frozenset({"ORDER_IS_FULLY_FILLED", "DUPLICATE_CANCEL_REQUEST"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

LIST_PAGE = 250
MAX_PAGES = 100


# --- pure: Coinbase JSON -> venue types ----------------------------------------------------------


def market_from(info: dict[str, Any]) -> Market:
    """A Market from a raw `market/products` entry."""
    return Market(
        pair=f"{info['base_currency_id']}-{info['quote_currency_id']}",
        base=info["base_currency_id"],
        quote=info["quote_currency_id"],
        tick_size=dec(info.get("price_increment") or info["quote_increment"], "price_increment"),
        lot_size=dec(info["base_increment"], "base_increment"),
        min_quantity=dec(info["base_min_size"], "base_min_size"),
        min_notional=dec(info.get("quote_min_size") or 0, "quote_min_size"),
    )


def book_side(levels: Any, best_first_descending: bool, depth: int) -> list[BookLevel]:
    out = [BookLevel(dec(lv["price"], "price"), dec(lv["size"], "size")) for lv in levels or []]
    out.sort(key=lambda lv: lv.price, reverse=best_first_descending)
    return out[:depth] if depth > 0 else out


def order_body(order: OrderRequest, market: Market) -> dict[str, Any]:
    """The create-order JSON, sizes on the market's grid; InvalidOrder when nothing valid is left."""
    quantity, price = on_grid("coinbase", market, order)
    if price is None:
        configuration = {"market_market_ioc": {"base_size": fmt(quantity)}}
    else:
        configuration = {
            "limit_limit_gtc": {"base_size": fmt(quantity), "limit_price": fmt(price), "post_only": False}
        }
    return {
        "client_order_id": order.client_order_id,
        "product_id": market.pair,
        "side": "BUY" if order.side is Side.BUY else "SELL",
        "order_configuration": configuration,
    }


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def fill_from(fill: dict[str, Any], quote: str) -> FillReport:
    if fill.get("size_in_quote"):
        raise ExchangeRejected("coinbase: a fill sized in quote currency is not supported")
    indicator = fill.get("liquidity_indicator")
    if indicator not in ("MAKER", "TAKER"):
        raise ExchangeRejected(f"coinbase: fill {fill.get('trade_id')} has liquidity {indicator!r}")
    return FillReport(
        trade_id=str(fill["trade_id"]),
        price=dec(fill["price"], "fill price"),
        quantity=dec(fill["size"], "fill size"),
        fee=dec(fill["commission"], "commission"),
        fee_currency=quote,
        liquidity=Liquidity.MAKER if indicator == "MAKER" else Liquidity.TAKER,
        time=_time(fill.get("trade_time")),
    )


def report_from(order: dict[str, Any], fills: list[FillReport]) -> OrderReport:
    """An OrderReport from a raw order and its fills (filled amounts are summed from the fills, so
    the report is consistent with them)."""
    ((kind, config),) = order["order_configuration"].items()
    filled = dec(order.get("filled_size") or 0, "filled_size")
    status = order.get("status")
    if status in _LIVE:
        state = OrderState.PARTIALLY_FILLED if filled > 0 else OrderState.OPEN
    elif status in _DONE:
        state = _DONE[status]
    else:
        raise ExchangeRejected(f"coinbase: order {order.get('order_id')} has status {status!r}")
    limit = config.get("limit_price")
    return OrderReport(
        venue_order_id=order["order_id"],
        client_order_id=order["client_order_id"],
        pair=order["product_id"],
        side=Side.BUY if order["side"] == "BUY" else Side.SELL,
        order_type=OrderType.MARKET if kind.startswith("market") else OrderType.LIMIT,
        quantity=dec(config["base_size"], "base_size") if "base_size" in config else filled,
        limit_price=dec(limit, "limit_price") if limit is not None else None,
        state=state,
        filled_quantity=sum((f.quantity for f in fills), Decimal(0)) if fills else filled,
        filled_notional=sum((f.price * f.quantity for f in fills), Decimal(0)),
        fees=sum((f.fee for f in fills), Decimal(0)),
        fills=tuple(fills),
    )


def is_order_sent(order: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether the order Coinbase answered with is the one `body` asked for (same id, product,
    side and configuration), and not an earlier order that already held the client_order_id."""
    sent = body["order_configuration"]
    got = order.get("order_configuration") or {}
    if set(got) != set(sent):
        return False
    ((kind, wanted),) = sent.items()
    same_numbers = all(
        name in got[kind] and dec(got[kind][name], name) == dec(value, name)
        for name, value in wanted.items()
        if name in ("base_size", "limit_price")
    )
    return same_numbers and all(order.get(f) == body[f] for f in ("client_order_id", "product_id", "side"))


def rejection(body: Any) -> Exception | None:
    """The venue error for a create answered with `error_response`, by Coinbase's enums."""
    response = body.get("error_response") if isinstance(body, dict) else None
    if not isinstance(response, dict):
        return None
    codes = {
        response.get("preview_failure_reason"),
        response.get("error"),
        response.get("new_order_failure_reason"),
    }
    detail = f"coinbase refused the order: {response.get('error')} / {response.get('preview_failure_reason')}"
    if codes & _INSUFFICIENT:
        return InsufficientFunds(detail)
    if codes & _INVALID_ORDER:
        return InvalidOrder(detail)
    return None


# --- the adapter ---------------------------------------------------------------------------------


class CoinbaseAdapter:
    broker = "coinbase"
    ccxt_id = "coinbase"
    #: Beyond each operation's own request (rate_limits.coinbase): there is no look-up by client
    #: order id, so the order list is searched (also before a send: Coinbase answers a reused id
    #: with the existing order), and the order and its fills are read back.
    follow_up_costs = {"place_order": {"private": 3}, "cancel_order": {"private": 3}, "fetch_order": {"private": 1}}

    def options(self) -> dict[str, Any]:
        # No v2 currency calls in load_markets (the Coinbase App API, limited separately); keep the
        # last JSON answer, whose error enums type a refused order.
        return {"has": {"fetchCurrencies": False}, "enableLastJsonResponse": True}

    def redirect(self, exchange: ccxt.Exchange, base_url: str) -> None:
        target = urlsplit(base_url)
        for name, url in exchange.urls["api"].items():
            exchange.urls["api"][name] = (
                urlsplit(url)._replace(scheme=target.scheme, netloc=target.netloc).geturl()
            )

    def markets(self, exchange: ccxt.Exchange) -> dict[str, Market]:
        out = {}
        for market in exchange.markets.values():
            info = market["info"]
            if (
                market.get("spot")
                and info.get("quote_currency_id") == QUOTE
                and market.get("active") is not False
            ):
                parsed = market_from(info)
                out[parsed.pair] = parsed
        return out

    def _market(self, exchange: ccxt.Exchange, pair: str) -> Market:
        for market in exchange.markets_by_id.get(pair, []):
            if market.get("spot"):
                return market_from(market["info"])
        raise InvalidOrder(f"coinbase does not list {pair!r}")

    async def fees(self, exchange: ccxt.Exchange) -> FeeSchedule:
        if not exchange.apiKey:
            return DEFAULT_FEES
        tier = (await exchange.v3PrivateGetBrokerageTransactionSummary()).get("fee_tier") or {}
        return FeeSchedule(
            dec(tier["maker_fee_rate"], "maker_fee_rate"), dec(tier["taker_fee_rate"], "taker_fee_rate")
        )

    async def order_book(self, exchange: ccxt.Exchange, pair: str, depth: int) -> OrderBook:
        market = self._market(exchange, pair)
        request: dict[str, Any] = {"product_id": market.pair}
        if depth > 0:
            request["limit"] = depth
        book = (await exchange.v3PublicGetBrokerageMarketProductBook(request)).get("pricebook") or {}
        return OrderBook(
            pair, book_side(book.get("bids"), True, depth), book_side(book.get("asks"), False, depth)
        )

    async def create_order(self, exchange: ccxt.Exchange, order: OrderRequest) -> OrderReport:
        market = self._market(exchange, order.pair)
        body = order_body(order, market)
        taken = DuplicateClientOrderId(f"coinbase: client_order_id {order.client_order_id!r} is already used")
        if await self._find(exchange, market.pair, order.client_order_id, pages=1) is not None:
            raise taken
        try:
            answer = await exchange.v3PrivatePostBrokerageOrders(body)
        except ccxt.ExchangeError as exc:
            # ccxt raises on any error_response; the enums say which kind of refusal it was.
            typed = rejection(exchange.last_json_response)
            if typed is not None:
                raise typed from exc
            raise
        if answer.get("success") is not True:
            raise rejection(answer) or ExchangeRejected(f"coinbase: order not created: {answer}")
        order_id = answer["success_response"]["order_id"]
        raw = (await exchange.v3PrivateGetBrokerageOrdersHistoricalOrderId({"order_id": order_id}))["order"]
        if not is_order_sent(raw, body):
            raise taken
        return await self._report(exchange, raw, market.quote)

    async def fetch_order(self, exchange: ccxt.Exchange, pair: str, client_order_id: str) -> OrderReport:
        market = self._market(exchange, pair)
        raw = await self._find(exchange, market.pair, client_order_id)
        if raw is None:
            raise OrderNotFound(f"coinbase: no order with client_order_id {client_order_id!r} on {pair}")
        return await self._report(exchange, raw, market.quote)

    async def cancel_order(self, exchange: ccxt.Exchange, pair: str, client_order_id: str) -> OrderReport:
        market = self._market(exchange, pair)
        raw = await self._find(exchange, market.pair, client_order_id)
        if raw is None:
            raise OrderNotFound(f"coinbase: no order with client_order_id {client_order_id!r} on {pair}")
        if raw.get("status") in _LIVE:
            answer = await exchange.v3PrivatePostBrokerageOrdersBatchCancel({"order_ids": [raw["order_id"]]})
            (result,) = answer.get("results") or [{}]
            reason = result.get("failure_reason")
            if result.get("success") is not True and reason not in _ALREADY_DONE:
                if reason == "UNKNOWN_CANCEL_ORDER":
                    raise OrderNotFound(f"coinbase: order {raw['order_id']} is unknown to cancel")
                raise ExchangeRejected(f"coinbase: cancel of {raw['order_id']} refused: {reason}")
            raw = (
                await exchange.v3PrivateGetBrokerageOrdersHistoricalOrderId({"order_id": raw["order_id"]})
            )["order"]
        return await self._report(exchange, raw, market.quote)

    async def balances(self, exchange: ccxt.Exchange) -> dict[str, Balance]:
        response = (await exchange.fetch_balance({"v3": True}))["info"]
        free: dict[str, Decimal] = {}
        locked: dict[str, Decimal] = {}
        for account in response.get("accounts") or []:
            available, hold = account["available_balance"], account["hold"]
            asset = available["currency"]
            free[asset] = free.get(asset, Decimal(0)) + dec(available["value"], f"{asset} available")
            locked[asset] = locked.get(asset, Decimal(0)) + dec(hold["value"], f"{asset} hold")
        return {asset: Balance(asset, free[asset], locked[asset]) for asset in free}

    # -- helpers

    async def _find(
        self, exchange: ccxt.Exchange, product_id: str, client_order_id: str, pages: int = MAX_PAGES
    ) -> dict[str, Any] | None:
        """The raw order carrying `client_order_id` on `product_id`, searching `pages` pages of the
        product's orders, newest first."""
        request: dict[str, Any] = {"product_ids": product_id, "limit": LIST_PAGE}
        for _ in range(pages):
            page = await exchange.v3PrivateGetBrokerageOrdersHistoricalBatch(request)
            for order in page.get("orders") or []:
                if order.get("client_order_id") == client_order_id:
                    return dict(order)
            cursor = page.get("cursor")
            if not page.get("has_next") or not cursor or cursor == request.get("cursor"):
                return None
            request["cursor"] = cursor
        if pages == MAX_PAGES:
            log.warning("coinbase order search gave up", extra={"product_id": product_id, "pages": pages})
        return None

    async def _report(self, exchange: ccxt.Exchange, order: dict[str, Any], quote: str) -> OrderReport:
        fills: list[FillReport] = []
        if dec(order.get("filled_size") or 0, "filled_size") > 0:
            request: dict[str, Any] = {"order_ids": order["order_id"], "limit": LIST_PAGE}
            for _ in range(MAX_PAGES):
                page = await exchange.v3PrivateGetBrokerageOrdersHistoricalFills(request)
                fills.extend(fill_from(f, quote) for f in page.get("fills") or [])
                cursor = page.get("cursor")
                if not cursor or cursor == request.get("cursor"):
                    break
                request["cursor"] = cursor
        fills.sort(key=lambda f: (f.time or _EPOCH, f.trade_id))
        return report_from(order, fills)


ADAPTER = CoinbaseAdapter()
