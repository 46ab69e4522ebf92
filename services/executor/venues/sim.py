"""The simulated exchange as a Venue: one broker of the SimulatedExchangeService, over gRPC.

One long-lived channel per venue, a deadline on every call, and gRPC failures turned into the typed
venue errors here, at the edge, by status code and ErrorInfo reason (never by message text).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from nija.common.v1 import common_pb2
from nija.simexchange.v1 import simexchange_pb2 as pb
from nija.simexchange.v1 import simexchange_pb2_grpc

from services.domain.money import fmt
from services.executor.venues.base import (
    Account,
    AuthenticationFailed,
    Balance,
    BookLevel,
    DuplicateClientOrderId,
    ExchangeUnavailable,
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
    RateLimited,
    VenueError,
)
from services.runtime.channels import open_channel
from services.runtime.errors import reason_of
from services.runtime.wire import SIDE_FROM_PB, SIDE_TO_PB

_ORDER_TYPE_TO_PB = {OrderType.MARKET: pb.ORDER_TYPE_MARKET, OrderType.LIMIT: pb.ORDER_TYPE_LIMIT}
_ORDER_TYPE_FROM_PB = {v: k for k, v in _ORDER_TYPE_TO_PB.items()}
_ORDER_STATE_FROM_PB = {
    pb.ORDER_STATE_OPEN: OrderState.OPEN,
    pb.ORDER_STATE_PARTIALLY_FILLED: OrderState.PARTIALLY_FILLED,
    pb.ORDER_STATE_FILLED: OrderState.FILLED,
    pb.ORDER_STATE_CANCELLED: OrderState.CANCELLED,
}
_LIQUIDITY_FROM_PB = {
    common_pb2.LIQUIDITY_MAKER: Liquidity.MAKER,
    common_pb2.LIQUIDITY_TAKER: Liquidity.TAKER,
}

_UNAVAILABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)

T = TypeVar("T")

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def error_metadata(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    """The metadata of the ErrorInfo a failed call carries in its trailing status details ({} when
    there is none, or the details cannot be read: a hint is never worth failing the mapping for)."""
    for key, value in exc.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:  # a malformed trailer is no hint at all
            return {}
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return dict(info.metadata)
    return {}


def _retry_after_s(metadata: dict[str, str]) -> float | None:
    """The exchange's retry-after hint in seconds; None when it gave none or one that makes no sense."""
    try:
        ms = int(metadata["retry_after_ms"])
    except (KeyError, ValueError):
        return None
    return ms / 1000 if ms >= 0 else None


def venue_error(exc: grpc.aio.AioRpcError) -> VenueError:
    """The typed venue error for a failed call to the simulated exchange."""
    code, reason = exc.code(), reason_of(exc)
    message = f"{code.name}: {exc.details() or ''}"
    if code in _UNAVAILABLE:
        return ExchangeUnavailable(message)
    if code is grpc.StatusCode.ALREADY_EXISTS:
        return DuplicateClientOrderId(message)
    if code is grpc.StatusCode.NOT_FOUND:
        return OrderNotFound(message) if reason == "ORDER_NOT_FOUND" else InvalidOrder(message)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidOrder(message)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return InsufficientFunds(message) if reason == "INSUFFICIENT_FUNDS" else InvalidOrder(message)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RateLimited(message, retry_after_s=_retry_after_s(error_metadata(exc)))
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AuthenticationFailed(message)
    # UNIMPLEMENTED, OUT_OF_RANGE, DATA_LOSS, ...: nothing the order could fix; the outcome is unknown.
    return ExchangeUnavailable(message)


def _dt(ts: timestamp_pb2.Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=timezone.utc)


def _order_report(order: pb.VenueOrder) -> OrderReport:
    return OrderReport(
        venue_order_id=order.venue_order_id,
        client_order_id=order.client_order_id,
        pair=order.pair,
        side=SIDE_FROM_PB[order.side],
        order_type=_ORDER_TYPE_FROM_PB[order.order_type],
        quantity=Decimal(order.quantity),
        limit_price=Decimal(order.limit_price) if order.limit_price else None,
        state=_ORDER_STATE_FROM_PB[order.state],
        filled_quantity=Decimal(order.filled_quantity or "0"),
        filled_notional=Decimal(order.filled_notional or "0"),
        fees=Decimal(order.fees or "0"),
        fills=tuple(
            FillReport(
                trade_id=f.venue_trade_id,
                price=Decimal(f.price),
                quantity=Decimal(f.quantity),
                fee=Decimal(f.fee),
                fee_currency=f.fee_currency,
                liquidity=_LIQUIDITY_FROM_PB[f.liquidity],
                time=_dt(f.time),
            )
            for f in order.fills
        ),
    )


class SimVenue:
    """`broker` on the simulated exchange at `target` ("host:port")."""

    def __init__(self, broker: str, target: str, timeout_s: float = 5.0) -> None:
        self.broker = broker
        self._timeout_s = timeout_s
        self._channel = open_channel(target)
        self._stub = simexchange_pb2_grpc.SimulatedExchangeServiceStub(self._channel)

    async def _call(self, method: Callable[..., Awaitable[T]], request: object) -> T:
        try:
            return await method(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise venue_error(exc) from exc

    async def load_markets(self) -> dict[str, Market]:
        response = await self._call(self._stub.ListMarkets, pb.ListMarketsRequest(broker=self.broker))
        return {
            m.pair: Market(
                pair=m.pair,
                base=m.base,
                quote=m.quote,
                tick_size=Decimal(m.tick_size),
                lot_size=Decimal(m.lot_size),
                min_quantity=Decimal(m.min_quantity),
                min_notional=Decimal(m.min_notional),
                # An older exchange leaves it empty: it said nothing, which Market reads as 0.
                withdrawal_fee=Decimal(m.withdrawal_fee or "0"),
            )
            for m in response.markets
        }

    async def fetch_fees(self) -> FeeSchedule:
        response = await self._call(self._stub.ListMarkets, pb.ListMarketsRequest(broker=self.broker))
        return FeeSchedule(maker=Decimal(response.fees.maker), taker=Decimal(response.fees.taker))

    async def fetch_order_book(self, pair: str, depth: int = 0) -> OrderBook:
        response = await self._call(
            self._stub.GetOrderBook, pb.GetOrderBookRequest(broker=self.broker, pair=pair, depth=depth)
        )
        return OrderBook(
            pair=pair,
            bids=tuple(BookLevel(Decimal(lv.price), Decimal(lv.quantity)) for lv in response.bids),
            asks=tuple(BookLevel(Decimal(lv.price), Decimal(lv.quantity)) for lv in response.asks),
        )

    async def create_order(self, account: Account, order: OrderRequest) -> OrderReport:
        request = pb.PlaceOrderRequest(
            broker=self.broker,
            account_id=account.account_id,
            client_order_id=order.client_order_id,
            pair=order.pair,
            side=SIDE_TO_PB[order.side],
            order_type=_ORDER_TYPE_TO_PB[order.order_type],
            quantity=fmt(order.quantity),
            limit_price=fmt(order.limit_price) if order.limit_price is not None else "",
        )
        response = await self._call(self._stub.PlaceOrder, request)
        return _order_report(response.order)

    async def fetch_order(self, account: Account, pair: str, client_order_id: str) -> OrderReport:
        request = pb.GetOrderRequest(
            broker=self.broker, account_id=account.account_id, client_order_id=client_order_id
        )
        response = await self._call(self._stub.GetOrder, request)
        return _order_report(response.order)

    async def cancel_order(self, account: Account, pair: str, client_order_id: str) -> OrderReport:
        request = pb.CancelOrderRequest(
            broker=self.broker, account_id=account.account_id, client_order_id=client_order_id
        )
        response = await self._call(self._stub.CancelOrder, request)
        return _order_report(response.order)

    async def fetch_balances(self, account: Account) -> dict[str, Balance]:
        response = await self._call(
            self._stub.GetBalances, pb.GetBalancesRequest(broker=self.broker, account_id=account.account_id)
        )
        return {b.asset: Balance(b.asset, Decimal(b.free), Decimal(b.locked)) for b in response.balances}

    async def close(self) -> None:
        await self._channel.close()
