"""Kraken spot through ccxt: what differs from the other exchanges (see venues/live.py).

- Markets, books, orders, trades and balances are read from Kraken's raw JSON strings through
  ccxt's implicit methods (`publicGetDepth`, `privatePostAddOrder`, ...), never from ccxt's floats.
- The idempotency key is `cl_ord_id`. Kraken takes a UUID, 32 hex characters or free text of at most
  18 characters; a longer mesh id (the executor's are 35) is sent as a UUID derived from it, the same
  every time, so a lookup or cancel by the mesh id finds the order.
- ccxt's fetch_order sends a client id as `userref=<string>`, which Kraken refuses; the order is found
  with OpenOrders/ClosedOrders filtered by `cl_ord_id` instead, its fills with QueryTrades.
- Some of Kraken's error codes ccxt 4.5.90 leaves untyped (EAPI:Invalid signature, a duplicate
  cl_ord_id, ...); they are typed here from the response's error array, ccxt's class otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt

from services.domain.money import fmt
from services.domain.signal import Side
from services.executor.venues.base import (
    AuthenticationFailed,
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
    VenueError,
)
from services.executor.venues.live import dec, on_grid

QUOTE = "USD"
_BOOK_MAX = 500  # Depth's largest `count`: depth 0 asks for all of it
_TRADES_PER_CALL = 20  # QueryTrades' limit on txids per call
_CL_ORD_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}|[\x21-\x7e]{1,18}"
)

#: Kraken error codes -> the venue's errors, for the codes ccxt does not type the way the venue needs.
_BY_CODE: dict[str, type[VenueError]] = {
    "EAPI:Invalid key": AuthenticationFailed,
    "EAPI:Invalid signature": AuthenticationFailed,
    "EOrder:Duplicate order": DuplicateClientOrderId,
    "EOrder:Unknown order": OrderNotFound,
    "EOrder:Cost minimum not met": InvalidOrder,
    "EOrder:Order minimum not met": InvalidOrder,
    "EQuery:Unknown asset pair": InvalidOrder,
}
#: Codes that carry a detail after a further colon ("EOrder:Invalid price:XBTUSD price can only ...").
_BY_CODE_PREFIX: dict[str, type[VenueError]] = {"EOrder:Invalid price": InvalidOrder}

_STATES = {
    "pending": OrderState.OPEN,
    "open": OrderState.OPEN,
    "closed": OrderState.FILLED,
}


def kraken_client_id(client_order_id: str) -> str:
    """What `cl_ord_id` carries for a mesh client order id: itself when Kraken accepts it, else a
    version-4 UUID derived from it (deterministic, so fetch and cancel can compute it again)."""
    if _CL_ORD_ID.fullmatch(client_order_id):
        return client_order_id
    digest = hashlib.sha256(client_order_id.encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _error_codes(exchange: ccxt.Exchange) -> list[str]:
    body = exchange.last_json_response
    errors = body.get("error") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, str)] if isinstance(errors, list) else []


@contextlib.contextmanager
def _kraken_errors(exchange: ccxt.Exchange) -> Iterator[None]:
    """Types the Kraken error codes ccxt leaves as a bare ExchangeError (or types too broadly).
    ccxt raises from handle_errors right after it stored the response, with no await in between,
    so `last_json_response` is the answer to this very call."""
    try:
        yield
    except ccxt.ExchangeError as exc:
        for code in _error_codes(exchange):
            error = _BY_CODE.get(code) or next(
                (cls for prefix, cls in _BY_CODE_PREFIX.items() if code.startswith(prefix + ":")),
                None,
            )
            if error is AuthenticationFailed:
                raise AuthenticationFailed(f"kraken: authentication failed: {code}") from exc
            if error is not None:
                raise error(f"kraken: {code}") from exc
        raise


def _result(response: Any) -> Any:
    return response["result"] if isinstance(response, dict) else {}


def _step(decimals: Any) -> Decimal:
    return Decimal(1).scaleb(-int(dec(decimals, "decimals")))


def _market(market: dict[str, Any]) -> Market:
    """The mesh's view of a ccxt market, from Kraken's own AssetPairs entry (`info`)."""
    info = market["info"]
    tick = dec(info["tick_size"], "tick_size") if "tick_size" in info else _step(info["pair_decimals"])
    return Market(
        pair=f"{market['base']}-{market['quote']}",
        base=market["base"],
        quote=market["quote"],
        tick_size=tick,
        lot_size=_step(info["lot_decimals"]),
        min_quantity=dec(info.get("ordermin", "0"), "ordermin"),
        min_notional=dec(info.get("costmin", "0"), "costmin"),
    )


def _percent(value: Any, field: str) -> Decimal:
    """A fee tier's percentage as a fraction. Kraken publishes these as JSON numbers, never strings,
    so ccxt hands them over as floats: repr() gives back the shortest decimal text that reads as the
    same float, which is the text Kraken sent for any rate it publishes (a few decimals)."""
    text = repr(value) if isinstance(value, float) else value
    return dec(text, field) / 100


class KrakenAdapter:
    broker = "kraken"
    ccxt_id = "kraken"
    #: Beyond each operation's own request (rate_limits.kraken): AddOrder answers neither state nor
    #: fills, so a new order is read back (QueryOrders 1 + QueryTrades 2 on the call counter); a
    #: fetch is OpenOrders + ClosedOrders + QueryTrades (1 is the profile's); a cancel the same.
    follow_up_costs = {
        "place_order": {"api_counter": 3},
        "fetch_order": {"api_counter": 3},
        "cancel_order": {"api_counter": 4},
    }

    def options(self) -> dict[str, Any]:
        # Keep the parsed body of the last answer: Kraken's error codes are typed from it.
        return {"enableLastJsonResponse": True}

    def venue_client_order_id(self, client_order_id: str) -> str:
        """The id the exchange holds for a mesh client order id (see `kraken_client_id`)."""
        return kraken_client_id(client_order_id)

    def redirect(self, exchange: ccxt.Exchange, base_url: str) -> None:
        base = base_url.rstrip("/")
        for name, url in exchange.urls["api"].items():
            if isinstance(url, str):
                exchange.urls["api"][name] = base + urlsplit(url).path

    # -- markets ---------------------------------------------------------------------------------

    def markets(self, exchange: ccxt.Exchange) -> dict[str, Market]:
        usd = (m for m in exchange.markets.values() if m.get("spot") and m.get("quote") == QUOTE)
        return {spec.pair: spec for spec in map(_market, usd)}

    def _ccxt_market(self, exchange: ccxt.Exchange, pair: str) -> dict[str, Any]:
        base, _, quote = pair.partition("-")
        market = (exchange.markets or {}).get(f"{base}/{quote}")
        if market is None or not market.get("spot"):
            raise InvalidOrder(f"kraken: {pair} is not listed")
        return market  # type: ignore[no-any-return]

    async def fees(self, exchange: ccxt.Exchange) -> FeeSchedule:
        """The first tier of a USD pair's schedule (Kraken's tiers are the same on every pair)."""
        usd = sorted(
            (m for m in exchange.markets.values() if m.get("quote") == QUOTE),
            key=lambda m: m["id"],
        )
        if not usd:
            raise ExchangeUnavailable("kraken: no USD market loaded to read the fee schedule from")
        info = usd[0]["info"]
        return FeeSchedule(
            maker=_percent(info["fees_maker"][0][1], "fees_maker"),
            taker=_percent(info["fees"][0][1], "fees"),
        )

    async def order_book(self, exchange: ccxt.Exchange, pair: str, depth: int) -> OrderBook:
        market = self._ccxt_market(exchange, pair)
        with _kraken_errors(exchange):
            response = await exchange.publicGetDepth({"pair": market["id"], "count": depth or _BOOK_MAX})
        result = _result(response)
        book = result.get(market["id"]) or next(iter(result.values()), {"bids": [], "asks": []})

        def levels(rows: list[list[Any]]) -> tuple[BookLevel, ...]:
            return tuple(BookLevel(dec(row[0], "price"), dec(row[1], "volume")) for row in rows)

        return OrderBook(pair=pair, bids=levels(book["bids"]), asks=levels(book["asks"]))

    # -- orders ----------------------------------------------------------------------------------

    async def create_order(self, exchange: ccxt.Exchange, order: OrderRequest) -> OrderReport:
        market = self._ccxt_market(exchange, order.pair)
        spec = _market(market)
        quantity, price = on_grid("kraken", spec, order)
        params = {
            "pair": market["id"],
            "type": order.side.value,
            "ordertype": order.order_type.value,
            "volume": fmt(quantity),
            "cl_ord_id": kraken_client_id(order.client_order_id),
        }
        if price is not None:
            if quantity * price < spec.min_notional:
                raise InvalidOrder(
                    f"kraken: {quantity} at {price} is under the minimum cost {spec.min_notional}"
                )
            params["price"] = fmt(price)
        with _kraken_errors(exchange):
            placed = await exchange.privatePostAddOrder(params)
        txids = _result(placed).get("txid") or []
        if not txids:
            raise ExchangeUnavailable(f"kraken: AddOrder answered without a txid: {placed!r}")
        txid = txids[0]
        try:
            with _kraken_errors(exchange):
                queried = await exchange.privatePostQueryOrders({"txid": txid, "trades": "true"})
            return await self._report(
                exchange,
                order.pair,
                order.client_order_id,
                txid,
                _result(queried)[txid],
            )
        except (VenueError, ccxt.BaseError, KeyError) as exc:
            # The order is placed; only its state is unknown: the executor must look it up, not resend.
            raise ExchangeUnavailable(
                f"kraken: order {txid} placed, reading it back failed: {exc!r}"
            ) from exc

    async def fetch_order(self, exchange: ccxt.Exchange, pair: str, client_order_id: str) -> OrderReport:
        self._ccxt_market(exchange, pair)
        txid, info = await self._find(exchange, client_order_id, closed_first=False)
        return await self._report(exchange, pair, client_order_id, txid, info)

    async def cancel_order(self, exchange: ccxt.Exchange, pair: str, client_order_id: str) -> OrderReport:
        self._ccxt_market(exchange, pair)
        with _kraken_errors(exchange):
            await exchange.privatePostCancelOrder({"cl_ord_id": kraken_client_id(client_order_id)})
        txid, info = await self._find(exchange, client_order_id, closed_first=True)
        return await self._report(exchange, pair, client_order_id, txid, info)

    async def _find(
        self, exchange: ccxt.Exchange, client_order_id: str, *, closed_first: bool
    ) -> tuple[str, dict[str, Any]]:
        """(txid, order info) by client order id. Kraken filters Open- and ClosedOrders by cl_ord_id;
        an open order is looked for first, so one that closes meanwhile is still found."""
        request = {"cl_ord_id": kraken_client_id(client_order_id), "trades": "true"}
        lookups = [
            (exchange.privatePostOpenOrders, "open"),
            (exchange.privatePostClosedOrders, "closed"),
        ]
        for method, key in reversed(lookups) if closed_first else lookups:
            with _kraken_errors(exchange):
                orders = _result(await method(dict(request))).get(key) or {}
            if orders:
                # cl_ord_id is unique among open orders only: the newest closed one is the latest use.
                txid = max(orders, key=lambda t: orders[t].get("opentm") or 0)
                return txid, orders[txid]
        raise OrderNotFound(f"kraken: no order with client order id {client_order_id!r}")

    async def _report(
        self,
        exchange: ccxt.Exchange,
        pair: str,
        client_order_id: str,
        txid: str,
        info: dict[str, Any],
    ) -> OrderReport:
        descr = info["descr"]
        quote = pair.partition("-")[2]
        fee_currency = pair.partition("-")[0] if "fcib" in str(info.get("oflags", "")) else quote
        trade_ids = list(info.get("trades") or [])
        fills: list[FillReport] = []
        for start in range(0, len(trade_ids), _TRADES_PER_CALL):
            chunk = trade_ids[start : start + _TRADES_PER_CALL]
            with _kraken_errors(exchange):
                trades = _result(await exchange.privatePostQueryTrades({"txid": ",".join(chunk)}))
            fills.extend(_fill(trade_id, trades[trade_id], fee_currency) for trade_id in chunk)
        filled = dec(info["vol_exec"], "vol_exec")
        status = info["status"]
        state = _STATES.get(status, OrderState.CANCELLED)  # canceled, expired
        if state is OrderState.OPEN and filled > 0:
            state = OrderState.PARTIALLY_FILLED
        kind = OrderType(descr["ordertype"])
        return OrderReport(
            venue_order_id=txid,
            client_order_id=client_order_id,
            pair=pair,
            side=Side(descr["type"]),
            order_type=kind,
            quantity=dec(info["vol"], "vol"),
            limit_price=dec(descr["price"], "price") if kind is OrderType.LIMIT else None,
            state=state,
            filled_quantity=filled,
            filled_notional=dec(info["cost"], "cost"),
            fees=dec(info["fee"], "fee"),
            fills=tuple(fills),
        )

    # -- balances --------------------------------------------------------------------------------

    async def balances(self, exchange: ccxt.Exchange) -> dict[str, Balance]:
        with _kraken_errors(exchange):
            response = await exchange.privatePostBalanceEx()
        out = {}
        for asset_id, row in _result(response).items():
            if "." in asset_id:  # staked or earn balances (XBT.F, DOT.S): not tradable
                continue
            asset = exchange.safe_currency_code(asset_id)
            locked = dec(row.get("hold_trade", "0"), "hold_trade")
            out[asset] = Balance(asset, dec(row["balance"], "balance") - locked, locked)
        return out


def _fill(trade_id: str, trade: dict[str, Any], fee_currency: str) -> FillReport:
    at = trade.get("time")
    return FillReport(
        trade_id=trade_id,
        price=dec(trade["price"], "price"),
        quantity=dec(trade["vol"], "vol"),
        fee=dec(trade["fee"], "fee"),
        fee_currency=fee_currency,
        # Kraken marks each trade "maker": true/false; a trade without the flag took liquidity.
        liquidity=Liquidity.MAKER if trade.get("maker") is True else Liquidity.TAKER,
        # Seconds since the epoch as a JSON number: a time, not money.
        time=datetime.fromtimestamp(at, UTC) if isinstance(at, (int, float)) else None,
    )


ADAPTER = KrakenAdapter()
