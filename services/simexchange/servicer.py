"""SimulatedExchangeService: wire <-> engine, engine errors -> canonical codes. No logic of its own.

Every field is validated before the engine is called, and the engine checks everything before it
changes anything, so malformed input is refused whole and never half-applied.

What the network does to a call (latency, outages, 5xx, 429s, answers lost on the way back) is
`network.Network`'s, shared with the exchanges' HTTP front ends: `SetFault` sets it, and every other
call passes through `_network` first.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

import grpc
from google.protobuf import timestamp_pb2
from nija.common.v1 import common_pb2
from nija.simexchange.v1 import simexchange_pb2 as pb
from nija.simexchange.v1 import simexchange_pb2_grpc

from services.domain.money import BadDecimal, fmt, parse_decimal
from services.domain.signal import SignalProblem, check_id, check_pair
from services.runtime.errors import ServiceError, invalid, not_found, precondition, unary
from services.runtime.wire import SIDE_TO_PB, side_from_pb
from services.simexchange import core
from services.simexchange.network import Fault, Network, Strike

ORDER_TYPE_FROM_PB = {pb.ORDER_TYPE_MARKET: core.OrderType.MARKET, pb.ORDER_TYPE_LIMIT: core.OrderType.LIMIT}
ORDER_TYPE_TO_PB = {v: k for k, v in ORDER_TYPE_FROM_PB.items()}
ORDER_STATE_TO_PB = {
    core.OrderState.OPEN: pb.ORDER_STATE_OPEN,
    core.OrderState.PARTIALLY_FILLED: pb.ORDER_STATE_PARTIALLY_FILLED,
    core.OrderState.FILLED: pb.ORDER_STATE_FILLED,
    core.OrderState.CANCELLED: pb.ORDER_STATE_CANCELLED,
}
LIQUIDITY_TO_PB = {
    core.Liquidity.MAKER: common_pb2.LIQUIDITY_MAKER,
    core.Liquidity.TAKER: common_pb2.LIQUIDITY_TAKER,
}

T = TypeVar("T")

log = logging.getLogger(__name__)

#: A fault's added latency is capped: beyond a minute every caller's deadline has long passed, and
#: an outage is what FAULT_MODE_UNAVAILABLE is for. The same cap holds for a 429's retry-after.
MAX_FAULT_LATENCY_MS = 60_000
MAX_RETRY_AFTER_MS = 60_000
# ListOrders pages.
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5000


def _engine_call(fn: Callable[[], T]) -> T:
    """Run one engine call, translating its domain errors to canonical gRPC errors."""
    try:
        return fn()
    except core.UnknownBroker as exc:
        raise not_found("UNKNOWN_BROKER", str(exc)) from None
    except core.UnknownPair as exc:
        raise not_found("UNKNOWN_PAIR", str(exc)) from None
    except core.InvalidOrder as exc:
        raise invalid("INVALID_ORDER", str(exc), field=exc.field) from None
    except core.DuplicateClientOrderId as exc:
        raise ServiceError(grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_CLIENT_ORDER_ID", str(exc)) from None
    except core.OrderNotFound as exc:
        raise not_found("ORDER_NOT_FOUND", str(exc)) from None
    except core.InsufficientFunds as exc:
        raise precondition(
            "INSUFFICIENT_FUNDS",
            str(exc),
            asset=exc.asset,
            needed=fmt(exc.needed),
            available=fmt(exc.available),
        ) from None


# --- request fields ---------------------------------------------------------------------------


def _broker(value: str) -> str:
    if not value:
        raise invalid("BAD_BROKER", "broker is required", field="broker")
    return value


def _rate(value: float, field: str) -> float:
    # Written so NaN fails too.
    if not (0.0 <= value <= 1.0):
        raise invalid(f"BAD_{field.upper()}", f"{field} must be between 0 and 1, got {value}", field=field)
    return value


def _fault(request: pb.SetFaultRequest) -> Fault:
    if request.mode not in (pb.FAULT_MODE_NONE, pb.FAULT_MODE_UNAVAILABLE):
        raise invalid("BAD_MODE", "mode must be FAULT_MODE_NONE or FAULT_MODE_UNAVAILABLE", field="mode")
    if request.latency_ms > MAX_FAULT_LATENCY_MS:
        raise invalid(
            "BAD_LATENCY_MS",
            f"latency_ms must be at most {MAX_FAULT_LATENCY_MS}, got {request.latency_ms}",
            field="latency_ms",
        )
    error_rate = _rate(request.error_rate, "error_rate")
    lose_response_rate = _rate(request.lose_response_rate, "lose_response_rate")
    rate_limit_rate = _rate(request.rate_limit_rate, "rate_limit_rate")
    if request.retry_after_ms > MAX_RETRY_AFTER_MS:
        raise invalid(
            "BAD_RETRY_AFTER_MS",
            f"retry_after_ms must be at most {MAX_RETRY_AFTER_MS}, got {request.retry_after_ms}",
            field="retry_after_ms",
        )
    return Fault(
        unavailable=request.mode == pb.FAULT_MODE_UNAVAILABLE,
        latency_s=request.latency_ms / 1000,
        error_rate=error_rate,
        lose_response_rate=lose_response_rate,
        rate_limit_rate=rate_limit_rate,
        retry_after_ms=request.retry_after_ms,
        # Unseeded dice still get a seed, logged, so a run that went wrong can be replayed.
        seed=request.seed or secrets.randbits(64),
    )


def _id(value: str, field: str) -> str:
    try:
        return check_id(value, field)
    except SignalProblem as exc:
        raise invalid(f"BAD_{field.upper()}", str(exc), field=field) from None


def _optional_id(value: str, field: str) -> str:
    return _id(value, field) if value else ""


def _pair(value: str) -> str:
    try:
        return check_pair(value)
    except SignalProblem as exc:
        raise invalid("BAD_PAIR", str(exc), field="pair") from None


def _decimal(value: str, field: str) -> Decimal:
    try:
        return parse_decimal(value, field)
    except BadDecimal as exc:
        raise invalid(f"BAD_{field.upper()}", str(exc), field=field) from None


def _page_token(value: str) -> int:
    """A ListOrders page token: the position of the last order of the previous page."""
    if not value:
        return 0
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise invalid("BAD_PAGE_TOKEN", "page_token is not one this exchange gave out", field="page_token")
    return int(value)


def _order_ids(client_order_id: str, venue_order_id: str) -> tuple[str, str]:
    client = _optional_id(client_order_id, "client_order_id")
    venue = _optional_id(venue_order_id, "venue_order_id")
    if not client and not venue:
        raise invalid(
            "BAD_CLIENT_ORDER_ID", "client_order_id or venue_order_id is required", field="client_order_id"
        )
    return client, venue


def _place_command(request: pb.PlaceOrderRequest) -> core.PlaceOrder:
    try:
        order_type = ORDER_TYPE_FROM_PB[request.order_type]
    except KeyError:
        raise invalid(
            "BAD_ORDER_TYPE", "order_type must be ORDER_TYPE_MARKET or ORDER_TYPE_LIMIT", field="order_type"
        ) from None
    limit_price = _decimal(request.limit_price, "limit_price") if request.limit_price else None
    return core.PlaceOrder(
        client_order_id=_id(request.client_order_id, "client_order_id"),
        pair=_pair(request.pair),
        side=side_from_pb(request.side),
        order_type=order_type,
        quantity=_decimal(request.quantity, "quantity"),
        limit_price=limit_price,
    )


# --- responses --------------------------------------------------------------------------------


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _order_pb(order: core.OrderView) -> pb.VenueOrder:
    return pb.VenueOrder(
        venue_order_id=order.venue_order_id,
        client_order_id=order.client_order_id,
        pair=order.pair,
        side=SIDE_TO_PB[order.side],
        order_type=ORDER_TYPE_TO_PB[order.order_type],
        quantity=fmt(order.quantity),
        limit_price=fmt(order.limit_price) if order.limit_price is not None else "",
        state=ORDER_STATE_TO_PB[order.state],
        filled_quantity=fmt(order.filled_quantity),
        filled_notional=fmt(order.filled_notional),
        fees=fmt(order.fees),
        fills=[
            common_pb2.Fill(
                venue_trade_id=f.trade_id,
                price=fmt(f.price),
                quantity=fmt(f.quantity),
                fee=fmt(f.fee),
                fee_currency=f.fee_currency,
                liquidity=LIQUIDITY_TO_PB[f.liquidity],
                time=_timestamp(f.time),
            )
            for f in order.fills
        ],
        created_at=_timestamp(order.created_at),
        account_id=order.account_id,
    )


def _lost_response(broker: str) -> ServiceError:
    # Same code as a plain 5xx: the caller cannot tell that the order exists. Only the reason says
    # so, for the scenario's own checks; the venue maps by code.
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE, "RESPONSE_LOST", f"{broker}: no answer from the exchange", broker=broker
    )


class SimulatedExchangeServicer(simexchange_pb2_grpc.SimulatedExchangeServiceServicer):
    def __init__(self, exchange: core.SimExchange, network: Network | None = None) -> None:
        self._exchange = exchange
        self.network = network or Network()

    def fault(self, broker: str) -> Fault:
        return self.network.fault(broker)

    async def _network(self, broker: str) -> None:
        """The round trip to `broker`'s exchange; a fault that strikes refuses the call before it
        reaches the engine (so a refused call changes nothing)."""
        strike = await self.network.trip(broker)
        if strike is Strike.UNAVAILABLE:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, "EXCHANGE_UNAVAILABLE", f"{broker} is unavailable", broker=broker
            )
        if strike is Strike.RATE_LIMITED:
            retry_after_ms = self.fault(broker).retry_after_ms
            hint = {"retry_after_ms": str(retry_after_ms)} if retry_after_ms else {}
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
                f"{broker}: too many requests",
                broker=broker,
                **hint,
            )
        if strike is Strike.ERROR:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, "EXCHANGE_ERROR", f"{broker}: exchange error", broker=broker
            )

    def _loses_response(self, broker: str) -> bool:
        return self.network.loses_response(broker)

    @unary
    async def SetFault(
        self, request: pb.SetFaultRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetFaultResponse:
        # Never subject to faults itself: it is how a fault is lifted.
        broker = _broker(request.broker)
        if broker not in self._exchange.brokers:
            raise not_found(
                "UNKNOWN_BROKER", f"unknown broker {broker!r}; known: {', '.join(self._exchange.brokers)}"
            )
        fault = _fault(request)
        # Every SetFault starts fresh dice: the same request replays the same scenario.
        self.network.set(broker, fault)
        log.warning(
            "simexchange fault set",
            extra={
                "broker": broker,
                "unavailable": fault.unavailable,
                "latency_ms": request.latency_ms,
                "error_rate": fault.error_rate,
                "lose_response_rate": fault.lose_response_rate,
                "rate_limit_rate": fault.rate_limit_rate,
                "retry_after_ms": fault.retry_after_ms,
                "seed": fault.seed if fault.active else 0,
            },
        )
        return pb.SetFaultResponse()

    @unary
    async def ListMarkets(
        self, request: pb.ListMarketsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMarketsResponse:
        await self._network(request.broker)
        broker = _broker(request.broker)
        markets = _engine_call(lambda: self._exchange.markets(broker))
        fees = self._exchange.fees(broker)
        return pb.ListMarketsResponse(
            markets=[
                pb.Market(
                    pair=m.pair,
                    base=m.base,
                    quote=m.quote,
                    tick_size=fmt(m.tick_size),
                    lot_size=fmt(m.lot_size),
                    min_quantity=fmt(m.min_quantity),
                    min_notional=fmt(m.min_notional),
                    withdrawal_fee=fmt(m.withdrawal_fee),
                )
                for m in markets
            ],
            fees=pb.FeeSchedule(maker=fmt(fees.maker), taker=fmt(fees.taker)),
        )

    @unary
    async def GetOrderBook(
        self, request: pb.GetOrderBookRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderBookResponse:
        await self._network(request.broker)
        broker, pair = _broker(request.broker), _pair(request.pair)
        book = _engine_call(lambda: self._exchange.book(broker, pair, request.depth))
        return pb.GetOrderBookResponse(
            bids=[pb.BookLevel(price=fmt(lv.price), quantity=fmt(lv.quantity)) for lv in book.bids],
            asks=[pb.BookLevel(price=fmt(lv.price), quantity=fmt(lv.quantity)) for lv in book.asks],
            time=_timestamp(book.time),
        )

    @unary
    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlaceOrderResponse:
        await self._network(request.broker)
        broker = _broker(request.broker)
        account_id = _id(request.account_id, "account_id")
        command = _place_command(request)
        order = _engine_call(lambda: self._exchange.place_order(broker, account_id, command))
        # Only an executed order's answer is lost (a refusal is answered): a lost response always
        # means the client order id is taken, which a lookup by that id then shows.
        if self._loses_response(broker):
            log.warning(
                "simexchange response lost",
                extra={"broker": broker, "client_order_id": order.client_order_id, "state": order.state.name},
            )
            raise _lost_response(broker)
        return pb.PlaceOrderResponse(order=_order_pb(order))

    @unary
    async def GetOrder(
        self, request: pb.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOrderResponse:
        await self._network(request.broker)
        broker = _broker(request.broker)
        account_id = _id(request.account_id, "account_id")
        client, venue = _order_ids(request.client_order_id, request.venue_order_id)
        order = _engine_call(
            lambda: self._exchange.get_order(broker, account_id, client_order_id=client, venue_order_id=venue)
        )
        return pb.GetOrderResponse(order=_order_pb(order))

    @unary
    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelOrderResponse:
        await self._network(request.broker)
        broker = _broker(request.broker)
        account_id = _id(request.account_id, "account_id")
        client, venue = _order_ids(request.client_order_id, request.venue_order_id)
        order = _engine_call(
            lambda: self._exchange.cancel_order(
                broker, account_id, client_order_id=client, venue_order_id=venue
            )
        )
        return pb.CancelOrderResponse(order=_order_pb(order))

    @unary
    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOrdersResponse:
        broker = _broker(request.broker)
        account_id = _optional_id(request.account_id, "account_id")
        if request.page_size > MAX_PAGE_SIZE:
            raise invalid("BAD_PAGE_SIZE", f"page_size must be at most {MAX_PAGE_SIZE}", field="page_size")
        after = _page_token(request.page_token)
        orders, last = _engine_call(
            lambda: self._exchange.orders(broker, account_id, after, request.page_size or DEFAULT_PAGE_SIZE)
        )
        return pb.ListOrdersResponse(orders=[_order_pb(o) for o in orders], next_page_token=str(last) if last else "")

    @unary
    async def GetBalances(
        self, request: pb.GetBalancesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBalancesResponse:
        await self._network(request.broker)
        broker = _broker(request.broker)
        account_id = _id(request.account_id, "account_id")
        balances = _engine_call(lambda: self._exchange.balances(broker, account_id))
        return pb.GetBalancesResponse(
            balances=[pb.Balance(asset=b.asset, free=fmt(b.free), locked=fmt(b.locked)) for b in balances]
        )
