"""What a client gets back, as typed values: money as `Decimal`, states as `Status`.

Built from the wire messages at the edge (`*.from_pb`), so nothing past this module handles a
decimal string or a protobuf enum number.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal

import grpc
from google.protobuf import timestamp_pb2
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2
from nija.router.v1 import router_pb2

from services.domain.signal import ExecutionMethod, Side
from services.domain.states import Status
from services.runtime.errors import status_code
from services.runtime.wire import METHOD_FROM_PB, SIDE_FROM_PB, STATUS_FROM_PB

ZERO = Decimal(0)

_LIQUIDITY = {common_pb2.LIQUIDITY_MAKER: "maker", common_pb2.LIQUIDITY_TAKER: "taker"}
_POLICY = {common_pb2.ROUTING_POLICY_SCORE: "score", common_pb2.ROUTING_POLICY_COST: "cost"}


def _money(text: str) -> Decimal:
    """A wire decimal; empty means nothing yet (zero)."""
    return Decimal(text) if text else ZERO


def _optional(text: str) -> Decimal | None:
    return Decimal(text) if text else None


def _time(ts: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return ts.ToDatetime(tzinfo=timezone.utc) if present else None


@dataclasses.dataclass(frozen=True)
class Fill:
    venue_trade_id: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_currency: str
    #: "maker", "taker" or "" (unknown).
    liquidity: str
    time: datetime | None

    @classmethod
    def from_pb(cls, pb: common_pb2.Fill) -> Fill:
        return cls(
            venue_trade_id=pb.venue_trade_id, price=_money(pb.price), quantity=_money(pb.quantity),
            fee=_money(pb.fee), fee_currency=pb.fee_currency, liquidity=_LIQUIDITY.get(pb.liquidity, ""),
            time=_time(pb.time, pb.HasField("time")),
        )


@dataclasses.dataclass(frozen=True)
class Leg:
    broker: str
    size_usd: Decimal
    child_signal_id: str


@dataclasses.dataclass(frozen=True)
class Route:
    """Why a broker was chosen ("split" when the order is split across `legs`)."""

    broker: str
    method: ExecutionMethod | None
    priority: int
    policy: str
    estimated_fees: Decimal
    estimated_cost: Decimal | None
    estimated_latency_ms: float
    score: float
    reason: str
    #: 1 for the first choice; higher after a failover.
    attempt: int
    legs: tuple[Leg, ...]

    @classmethod
    def from_pb(cls, pb: common_pb2.RouteDecision) -> Route:
        return cls(
            broker=pb.broker, method=METHOD_FROM_PB.get(pb.execution_method), priority=pb.priority,
            policy=_POLICY.get(pb.policy, ""), estimated_fees=_money(pb.estimated_fees),
            estimated_cost=_optional(pb.estimated_cost), estimated_latency_ms=pb.estimated_latency_ms,
            score=pb.score, reason=pb.reason, attempt=pb.attempt,
            legs=tuple(Leg(leg.broker, _money(leg.size_usd), leg.child_signal_id) for leg in pb.legs),
        )


@dataclasses.dataclass(frozen=True)
class Update:
    """One persisted state change of a signal's order (figures are cumulative for the order)."""

    signal_id: str
    user_id: str
    #: Per user, gap-free, increasing: re-attach with after_sequence = the last one seen.
    sequence: int
    status: Status
    broker: str
    pair: str
    side: Side | None
    #: Fills new in this update.
    fills: tuple[Fill, ...]
    reason: str
    filled_quantity: Decimal
    filled_notional: Decimal
    fees_total: Decimal
    average_price: Decimal | None
    order_quantity: Decimal | None
    client_order_id: str
    venue_order_id: str
    time: datetime | None
    #: Present on ROUTING updates.
    route: Route | None
    #: Set on a split order's child updates: the signal the caller submitted.
    parent_signal_id: str

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @classmethod
    def from_pb(cls, pb: common_pb2.ExecutionUpdate) -> Update:
        status = STATUS_FROM_PB.get(pb.status)
        if status is None:
            raise ValueError(f"update {pb.sequence} of {pb.signal_id} has no status")
        return cls(
            signal_id=pb.signal_id, user_id=pb.user_id, sequence=pb.sequence, status=status,
            broker=pb.broker, pair=pb.pair, side=SIDE_FROM_PB.get(pb.side),
            fills=tuple(Fill.from_pb(f) for f in pb.fills), reason=pb.reason,
            filled_quantity=_money(pb.filled_quantity), filled_notional=_money(pb.filled_notional),
            fees_total=_money(pb.fees_total), average_price=_optional(pb.average_price),
            order_quantity=_optional(pb.order_quantity), client_order_id=pb.client_order_id,
            venue_order_id=pb.venue_order_id, time=_time(pb.time, pb.HasField("time")),
            route=Route.from_pb(pb.route) if pb.HasField("route") else None,
            parent_signal_id=pb.parent_signal_id,
        )


@dataclasses.dataclass(frozen=True)
class SignalRefusal:
    """A signal refused on a many-signal stream (`NijaClient.submit_many`), while the others go
    on: what `NijaError` would have said had it been submitted alone. Nothing was placed for it,
    unless it was refused after some updates (its stream broke: re-attach by signal id)."""

    signal_id: str
    user_id: str
    code: grpc.StatusCode
    #: The ErrorInfo reason, e.g. SIGNAL_ID_REUSED, STREAM_IN_FLIGHT_LIMIT.
    reason: str
    message: str

    @classmethod
    def from_pb(cls, pb: router_pb2.SignalRefusal) -> SignalRefusal:
        return cls(
            signal_id=pb.signal_id, user_id=pb.user_id, code=status_code(pb.refusal.code),
            reason=pb.refusal.reason, message=pb.refusal.message,
        )


@dataclasses.dataclass(frozen=True)
class TradeResult:
    """How a signal ended: its terminal state, every fill, and the figures of its last update.

    A REJECTED, FAILED or CANCELLED order is a result, not an exception: `reason` says why."""

    signal_id: str
    user_id: str
    state: Status
    broker: str
    reason: str
    fills: tuple[Fill, ...]
    filled_quantity: Decimal
    filled_notional: Decimal
    fees_total: Decimal
    average_price: Decimal | None
    #: Every update seen, in sequence order (a split order's children included).
    updates: tuple[Update, ...]

    @property
    def filled(self) -> bool:
        return self.state is Status.FILLED

    @classmethod
    def from_updates(cls, updates: Iterable[Update], final: Update) -> TradeResult:
        seen = tuple(updates)
        fills: dict[tuple[str, str], Fill] = {}
        for update in seen:
            for fill in update.fills:
                fills.setdefault((update.broker, fill.venue_trade_id), fill)
        return cls(
            signal_id=final.signal_id, user_id=final.user_id, state=final.status, broker=final.broker,
            reason=final.reason, fills=tuple(fills.values()), filled_quantity=final.filled_quantity,
            filled_notional=final.filled_notional, fees_total=final.fees_total,
            average_price=final.average_price, updates=seen,
        )


@dataclasses.dataclass(frozen=True)
class BrokerQuote:
    broker: str
    eligible: bool
    #: Why the broker cannot take the order ("" when eligible).
    exclusion: str
    score: float
    fee_usd: Decimal
    slippage_usd: Decimal
    withdrawal_usd: Decimal
    total_cost_usd: Decimal
    expected_price: Decimal | None
    slippage_bps: float
    liquidity_usd: Decimal

    @classmethod
    def from_pb(cls, pb: router_pb2.BrokerQuote) -> BrokerQuote:
        return cls(
            broker=pb.broker, eligible=pb.eligible, exclusion=pb.exclusion, score=pb.score.total,
            fee_usd=_money(pb.cost.fee_usd), slippage_usd=_money(pb.cost.slippage_usd),
            withdrawal_usd=_money(pb.cost.withdrawal_usd), total_cost_usd=_money(pb.cost.total_usd),
            expected_price=_optional(pb.cost.expected_price), slippage_bps=pb.cost.slippage_bps,
            liquidity_usd=_money(pb.liquidity_usd),
        )


@dataclasses.dataclass(frozen=True)
class Quote:
    """What the router would do with a signal now, without trading."""

    routable: bool
    #: Why not, when not routable.
    reason: str
    route: Route | None
    #: Every broker, in the order the router would try them.
    brokers: tuple[BrokerQuote, ...]

    @classmethod
    def from_pb(cls, pb: router_pb2.QuoteRouteResponse) -> Quote:
        return cls(
            routable=pb.routable, reason=pb.reason,
            route=Route.from_pb(pb.route) if pb.HasField("route") else None,
            brokers=tuple(BrokerQuote.from_pb(b) for b in pb.brokers),
        )


@dataclasses.dataclass(frozen=True)
class Position:
    pair: str
    #: Signed base quantity: positive long, negative short.
    quantity: Decimal
    average_entry_price: Decimal
    cost_basis: Decimal
    realized_pnl: Decimal
    fees: Decimal


@dataclasses.dataclass(frozen=True)
class Positions:
    positions: tuple[Position, ...]
    day: str
    traded_usd: Decimal
    realized_pnl: Decimal
    fees: Decimal
    reserved_usd: Decimal
    open_reservations: int

    @classmethod
    def from_pb(cls, pb: permission_pb2.GetPositionsResponse) -> Positions:
        today = pb.today
        return cls(
            positions=tuple(
                Position(p.pair, _money(p.quantity), _money(p.average_entry_price), _money(p.cost_basis),
                         _money(p.realized_pnl), _money(p.fees))
                for p in pb.positions
            ),
            day=today.day, traded_usd=_money(today.traded_usd), realized_pnl=_money(today.realized_pnl),
            fees=_money(today.fees), reserved_usd=_money(today.reserved_usd),
            open_reservations=today.open_reservations,
        )
