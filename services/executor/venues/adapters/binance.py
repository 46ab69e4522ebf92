"""Binance spot through ccxt (see venues/live.py for what an adapter does).

The mesh's USD is Binance's USDT: "BTC-USD" is BTCUSDT, and a USDT balance is shown as USD.
Everything money-like is read from Binance's own JSON strings (`info`, or the raw answer of ccxt's
implicit endpoints), never from ccxt's floats. The idempotency key is Binance's newClientOrderId;
orders are found and cancelled by origClientOrderId.

Binance reports some outcomes only by its numeric code, which ccxt does not always turn into the
class the venue needs; `_by_code` finishes the job (never by message text):
- -1000/-1001/-1004/-1006/-1007/-1008 (and whatever else ccxt calls OperationFailed): the request
  may or may not have executed -> ExchangeUnavailable.
- -1013 (a filter failure) and -1111 (too much precision): the order's own content -> InvalidOrder.
- -2010 (new order rejected) on a create: when an order with that client id exists, it is the
  duplicate refusal ("Duplicate order sent.") -> DuplicateClientOrderId.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
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
    ExchangeUnavailable,
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

MESH_QUOTE = "USD"
BINANCE_QUOTE = "USDT"
#: Binance's base-tier spot fees (binance.com/en/fee/schedule: regular user, 0.1000% maker and
#: taker; ccxt has the same). Exchange info carries no fees and the public instance has no key to
#: ask GET /api/v3/account's commissionRates with.
BASE_TIER = FeeSchedule(maker=Decimal("0.001"), taker=Decimal("0.001"))

UNKNOWN_OUTCOME = frozenset({-1000, -1001, -1004, -1006, -1007, -1008})
ORDER_CONTENT = frozenset({-1013, -1111})
NEW_ORDER_REJECTED = -2010

_STATES = {
    "NEW": OrderState.OPEN,
    "PENDING_NEW": OrderState.OPEN,
    "PENDING_CANCEL": OrderState.OPEN,
    "PARTIALLY_FILLED": OrderState.PARTIALLY_FILLED,
    "FILLED": OrderState.FILLED,
    "CANCELED": OrderState.CANCELLED,
    "EXPIRED": OrderState.CANCELLED,  # a market order's unfilled rest, an IOC/FOK's
    "EXPIRED_IN_MATCH": OrderState.CANCELLED,  # self-trade prevention
}


def mesh_asset(asset: str) -> str:
    return MESH_QUOTE if asset == BINANCE_QUOTE else asset


def _filters(info: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {f["filterType"]: f for f in info.get("filters", ())}


def market_of(info: Mapping[str, Any]) -> Market | None:
    """A USDT-quoted, trading spot symbol of exchangeInfo as a mesh Market; None for the others."""
    if info.get("quoteAsset") != BINANCE_QUOTE or info.get("status") != "TRADING":
        return None
    filters = _filters(info)
    price, lot = filters.get("PRICE_FILTER", {}), filters.get("LOT_SIZE", {})
    notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
    base = info["baseAsset"]
    return Market(
        pair=f"{base}-{MESH_QUOTE}",
        base=base,
        quote=MESH_QUOTE,
        tick_size=dec(price.get("tickSize", "0"), "tickSize"),
        lot_size=dec(lot.get("stepSize", "0"), "stepSize"),
        min_quantity=dec(lot.get("minQty", "0"), "minQty"),
        min_notional=dec(notional.get("minNotional", "0"), "minNotional"),
    )


def trade_id(symbol: str, binance_trade_id: Any) -> str:
    """Binance's trade ids are unique per symbol only."""
    return f"{symbol}-{binance_trade_id}"


def fill_of(symbol: str, raw: Mapping[str, Any], liquidity: Liquidity, time_ms: Any) -> FillReport:
    """A fill of a FULL order answer ("tradeId") or of myTrades ("id", "isMaker", "time")."""
    return FillReport(
        trade_id=trade_id(symbol, raw["tradeId"] if "tradeId" in raw else raw["id"]),
        price=dec(raw["price"], "price"),
        quantity=dec(raw["qty"], "qty"),
        fee=dec(raw["commission"], "commission"),
        fee_currency=mesh_asset(raw["commissionAsset"]),
        liquidity=liquidity,
        time=datetime.fromtimestamp(int(time_ms) / 1000, UTC) if time_ms is not None else None,
    )


def report_of(pair: str, info: Mapping[str, Any], fills: Sequence[FillReport]) -> OrderReport:
    """An order as Binance shows it (POST, GET and DELETE share the fields read here)."""
    # DELETE answers with the cancel request's own id in clientOrderId and the order's in origClientOrderId.
    client_order_id = info.get("origClientOrderId") or info["clientOrderId"]
    price = dec(info.get("price") or "0", "price")
    try:
        state = _STATES[info["status"]]
    except KeyError:
        raise ExchangeUnavailable(f"binance: unexpected order status {info.get('status')!r}") from None
    return OrderReport(
        venue_order_id=str(info["orderId"]),
        client_order_id=client_order_id,
        pair=pair,
        side=Side[info["side"]],
        order_type=OrderType.LIMIT if info["type"] == "LIMIT" else OrderType.MARKET,
        quantity=dec(info["origQty"], "origQty"),
        limit_price=price if price > 0 else None,
        state=state,
        filled_quantity=dec(info["executedQty"], "executedQty"),
        filled_notional=dec(info["cummulativeQuoteQty"], "cummulativeQuoteQty"),
        fees=sum((f.fee for f in fills), Decimal(0)),
        fills=tuple(fills),
    )


def _code(exchange: ccxt.Exchange) -> int | None:
    body = exchange.last_json_response
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


@contextlib.contextmanager
def _by_code(exchange: ccxt.Exchange) -> Iterator[None]:
    exchange.last_json_response = None  # a stale body must never type this call's error
    try:
        yield
    except ccxt.NetworkError:
        raise  # live.typed_errors knows these (429s, timeouts, bad nonces)
    except ccxt.BaseError as exc:
        code = _code(exchange)
        # ccxt's OperationFailed (Binance's -1000/-1001) is neither an ExchangeError nor a NetworkError.
        if code in UNKNOWN_OUTCOME or isinstance(exc, ccxt.OperationFailed):
            raise ExchangeUnavailable(f"binance: outcome unknown ({code}): {exc}") from exc
        if code in ORDER_CONTENT:
            raise InvalidOrder(f"binance: {exc}") from exc
        raise


class BinanceAdapter:
    broker = "binance"
    ccxt_id = "binance"
    #: Beyond each operation's own request (rate_limits.binance): an executed order's fills come
    #: from GET myTrades?orderId (weight 5) on a fetch and a cancel. A new order answers with its
    #: fills (FULL); the look-up after a -2010 refusal is rare enough to leave to a 429's back-off.
    follow_up_costs = {"fetch_order": {"ip_weight": 5}, "cancel_order": {"ip_weight": 5}}

    def options(self) -> dict[str, Any]:
        # Spot only: load_markets is then the single GET /api/v3/exchangeInfo (EXCHANGES.md).
        # The last JSON body is kept so errors can be typed by Binance's own code.
        return {
            "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False},
            "enableLastJsonResponse": True,
        }

    def redirect(self, exchange: ccxt.Exchange, base_url: str) -> None:
        target = urlsplit(base_url)
        for name, url in exchange.urls["api"].items():
            if isinstance(url, str):
                exchange.urls["api"][name] = (
                    urlsplit(url)._replace(scheme=target.scheme, netloc=target.netloc).geturl()
                )

    def markets(self, exchange: ccxt.Exchange) -> dict[str, Market]:
        out = {}
        for market in exchange.markets.values():
            if market.get("spot"):
                mesh = market_of(market["info"])
                if mesh is not None:
                    out[mesh.pair] = mesh
        return out

    async def fees(self, exchange: ccxt.Exchange) -> FeeSchedule:
        return BASE_TIER

    def _symbol(self, exchange: ccxt.Exchange, pair: str) -> tuple[str, Market]:
        """(ccxt's unified symbol, the mesh market) for a mesh pair; InvalidOrder when not listed."""
        base, _, quote = pair.partition("-")
        # By Binance's own id (BTCUSDT): ccxt may rename an asset in its unified symbol.
        listed = (
            (exchange.markets_by_id or {}).get(f"{base}{BINANCE_QUOTE}", []) if quote == MESH_QUOTE else []
        )
        for market in listed:
            mesh = market_of(market["info"]) if market.get("spot") else None
            if mesh is not None:
                return market["symbol"], mesh
        raise InvalidOrder(f"binance: {pair} is not listed")

    async def order_book(self, exchange: ccxt.Exchange, pair: str, depth: int) -> OrderBook:
        symbol, _ = self._symbol(exchange, pair)
        request: dict[str, Any] = {"symbol": exchange.market_id(symbol)}
        if depth > 0:  # else Binance's default of 100 levels, the cheapest weight
            request["limit"] = min(depth, 5000)
        with _by_code(exchange):
            raw = await exchange.public_get_depth(request)
        cut = depth if depth > 0 else None

        def levels(side: str) -> tuple[BookLevel, ...]:
            return tuple(BookLevel(dec(p, "price"), dec(q, "quantity")) for p, q in raw[side][:cut])

        return OrderBook(pair=pair, bids=levels("bids"), asks=levels("asks"))

    async def create_order(self, exchange: ccxt.Exchange, order: OrderRequest) -> OrderReport:
        symbol, market = self._symbol(exchange, order.pair)
        quantity, price = self._sized(market, order)
        params = {"newClientOrderId": order.client_order_id, "newOrderRespType": "FULL"}
        try:
            with _by_code(exchange):
                created = await exchange.create_order(
                    symbol,
                    order.order_type.value,
                    order.side.value,
                    fmt(quantity),
                    fmt(price) if price is not None else None,
                    params,
                )
        except ccxt.InvalidOrder as exc:
            if _code(exchange) == NEW_ORDER_REJECTED and await self._exists(exchange, order):
                raise DuplicateClientOrderId(
                    f"binance: {order.client_order_id} already exists: {exc}"
                ) from exc
            raise
        info = created["info"]
        # Everything in a new order's answer traded against the book: taker fills.
        fills = [
            fill_of(info["symbol"], f, Liquidity.TAKER, info.get("transactTime"))
            for f in info.get("fills", ())
        ]
        return report_of(order.pair, info, fills)

    @staticmethod
    def _sized(market: Market, order: OrderRequest) -> tuple[Decimal, Decimal | None]:
        """On the market's grid (live.on_grid), and a limit order's notional over Binance's
        NOTIONAL filter: refused before sending what Binance would refuse anyway."""
        quantity, price = on_grid("binance", market, order)
        if price is not None and quantity * price < market.min_notional:
            raise InvalidOrder(
                f"binance: notional {quantity * price} is under the minimum {market.min_notional}"
            )
        return quantity, price

    async def _exists(self, exchange: ccxt.Exchange, order: OrderRequest) -> bool:
        try:
            await self.fetch_order(exchange, order.pair, order.client_order_id)
        except OrderNotFound:
            return False
        return True

    async def _fills(self, exchange: ccxt.Exchange, info: Mapping[str, Any]) -> list[FillReport]:
        """An order's fills, with maker/taker, from myTrades (orderId narrows it to weight 5)."""
        if dec(info["executedQty"], "executedQty") == 0:
            return []
        with _by_code(exchange):
            trades = await exchange.private_get_mytrades(
                {"symbol": info["symbol"], "orderId": info["orderId"]}
            )
        return [
            fill_of(info["symbol"], t, Liquidity.MAKER if t["isMaker"] else Liquidity.TAKER, t.get("time"))
            for t in sorted(trades, key=lambda t: t["id"])
        ]

    async def fetch_order(self, exchange: ccxt.Exchange, pair: str, client_order_id: str) -> OrderReport:
        symbol, _ = self._symbol(exchange, pair)
        with _by_code(exchange):
            found = await exchange.fetch_order(None, symbol, {"origClientOrderId": client_order_id})
        info = found["info"]
        return report_of(pair, info, await self._fills(exchange, info))

    async def cancel_order(self, exchange: ccxt.Exchange, pair: str, client_order_id: str) -> OrderReport:
        symbol, _ = self._symbol(exchange, pair)
        try:
            with _by_code(exchange):
                cancelled = await exchange.cancel_order(None, symbol, {"origClientOrderId": client_order_id})
        except ccxt.OrderNotFound:
            # Binance says "Unknown order sent." also for an order that is no longer on the book:
            # one that finished before the cancel arrived is returned as it is.
            report = await self.fetch_order(exchange, pair, client_order_id)
            if not report.state.done:
                raise
            return report
        info = cancelled["info"]
        return report_of(pair, info, await self._fills(exchange, info))

    async def balances(self, exchange: ccxt.Exchange) -> dict[str, Balance]:
        with _by_code(exchange):
            account = await exchange.fetch_balance()
        out = {}
        for raw in account["info"]["balances"]:
            asset = mesh_asset(raw["asset"])
            out[asset] = Balance(asset, dec(raw["free"], "free"), dec(raw["locked"], "locked"))
        return out


ADAPTER = BinanceAdapter()
