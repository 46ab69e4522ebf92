import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIDE_UNSPECIFIED: _ClassVar[Side]
    SIDE_BUY: _ClassVar[Side]
    SIDE_SELL: _ClassVar[Side]

class SignalType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_TYPE_UNSPECIFIED: _ClassVar[SignalType]
    SIGNAL_TYPE_ENTRY: _ClassVar[SignalType]
    SIGNAL_TYPE_EXIT: _ClassVar[SignalType]
    SIGNAL_TYPE_PROFIT_TAKE: _ClassVar[SignalType]
    SIGNAL_TYPE_STOP_LOSS: _ClassVar[SignalType]

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PENDING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_ROUTING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_QUEUED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_EXECUTING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PARTIAL_FILL: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FILLED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_REJECTED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_CANCELLED: _ClassVar[ExecutionStatus]

class ExecutionMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_METHOD_UNSPECIFIED: _ClassVar[ExecutionMethod]
    EXECUTION_METHOD_MARKET: _ClassVar[ExecutionMethod]
    EXECUTION_METHOD_LIMIT: _ClassVar[ExecutionMethod]
    EXECUTION_METHOD_TWAP: _ClassVar[ExecutionMethod]

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]

class Liquidity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIQUIDITY_UNSPECIFIED: _ClassVar[Liquidity]
    LIQUIDITY_MAKER: _ClassVar[Liquidity]
    LIQUIDITY_TAKER: _ClassVar[Liquidity]

class RoutingPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTING_POLICY_UNSPECIFIED: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_SCORE: _ClassVar[RoutingPolicy]
    ROUTING_POLICY_COST: _ClassVar[RoutingPolicy]

class ExpiryPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPIRY_POLICY_UNSPECIFIED: _ClassVar[ExpiryPolicy]
    EXPIRY_POLICY_CANCEL: _ClassVar[ExpiryPolicy]
    EXPIRY_POLICY_CONVERT_TO_MARKET: _ClassVar[ExpiryPolicy]
SIDE_UNSPECIFIED: Side
SIDE_BUY: Side
SIDE_SELL: Side
SIGNAL_TYPE_UNSPECIFIED: SignalType
SIGNAL_TYPE_ENTRY: SignalType
SIGNAL_TYPE_EXIT: SignalType
SIGNAL_TYPE_PROFIT_TAKE: SignalType
SIGNAL_TYPE_STOP_LOSS: SignalType
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_PENDING: ExecutionStatus
EXECUTION_STATUS_ROUTING: ExecutionStatus
EXECUTION_STATUS_QUEUED: ExecutionStatus
EXECUTION_STATUS_EXECUTING: ExecutionStatus
EXECUTION_STATUS_PARTIAL_FILL: ExecutionStatus
EXECUTION_STATUS_FILLED: ExecutionStatus
EXECUTION_STATUS_REJECTED: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus
EXECUTION_STATUS_CANCELLED: ExecutionStatus
EXECUTION_METHOD_UNSPECIFIED: ExecutionMethod
EXECUTION_METHOD_MARKET: ExecutionMethod
EXECUTION_METHOD_LIMIT: ExecutionMethod
EXECUTION_METHOD_TWAP: ExecutionMethod
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState
LIQUIDITY_UNSPECIFIED: Liquidity
LIQUIDITY_MAKER: Liquidity
LIQUIDITY_TAKER: Liquidity
ROUTING_POLICY_UNSPECIFIED: RoutingPolicy
ROUTING_POLICY_SCORE: RoutingPolicy
ROUTING_POLICY_COST: RoutingPolicy
EXPIRY_POLICY_UNSPECIFIED: ExpiryPolicy
EXPIRY_POLICY_CANCEL: ExpiryPolicy
EXPIRY_POLICY_CONVERT_TO_MARKET: ExpiryPolicy

class RoutingOptions(_message.Message):
    __slots__ = ("policy", "allow_split", "include_withdrawal", "max_slippage_bps")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SPLIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_WITHDRAWAL_FIELD_NUMBER: _ClassVar[int]
    MAX_SLIPPAGE_BPS_FIELD_NUMBER: _ClassVar[int]
    policy: RoutingPolicy
    allow_split: bool
    include_withdrawal: bool
    max_slippage_bps: int
    def __init__(self, policy: _Optional[_Union[RoutingPolicy, str]] = ..., allow_split: _Optional[bool] = ..., include_withdrawal: _Optional[bool] = ..., max_slippage_bps: _Optional[int] = ...) -> None: ...

class TradeSignal(_message.Message):
    __slots__ = ("signal_id", "user_id", "pair", "side", "size_usd", "signal_type", "strategy", "timestamp", "metadata", "routing", "limit_price", "limit_expiry_s", "on_expiry")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    SIZE_USD_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_EXPIRY_S_FIELD_NUMBER: _ClassVar[int]
    ON_EXPIRY_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    user_id: str
    pair: str
    side: Side
    size_usd: str
    signal_type: SignalType
    strategy: str
    timestamp: _timestamp_pb2.Timestamp
    metadata: _containers.ScalarMap[str, str]
    routing: RoutingOptions
    limit_price: str
    limit_expiry_s: int
    on_expiry: ExpiryPolicy
    def __init__(self, signal_id: _Optional[str] = ..., user_id: _Optional[str] = ..., pair: _Optional[str] = ..., side: _Optional[_Union[Side, str]] = ..., size_usd: _Optional[str] = ..., signal_type: _Optional[_Union[SignalType, str]] = ..., strategy: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., routing: _Optional[_Union[RoutingOptions, _Mapping]] = ..., limit_price: _Optional[str] = ..., limit_expiry_s: _Optional[int] = ..., on_expiry: _Optional[_Union[ExpiryPolicy, str]] = ...) -> None: ...

class SplitLeg(_message.Message):
    __slots__ = ("broker", "size_usd", "child_signal_id")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    SIZE_USD_FIELD_NUMBER: _ClassVar[int]
    CHILD_SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    broker: str
    size_usd: str
    child_signal_id: str
    def __init__(self, broker: _Optional[str] = ..., size_usd: _Optional[str] = ..., child_signal_id: _Optional[str] = ...) -> None: ...

class RouteDecision(_message.Message):
    __slots__ = ("broker", "execution_method", "priority", "estimated_fees", "estimated_latency_ms", "score", "reason", "policy", "estimated_cost", "legs", "attempt")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_METHOD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FEES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_FIELD_NUMBER: _ClassVar[int]
    LEGS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    broker: str
    execution_method: ExecutionMethod
    priority: int
    estimated_fees: str
    estimated_latency_ms: float
    score: float
    reason: str
    policy: RoutingPolicy
    estimated_cost: str
    legs: _containers.RepeatedCompositeFieldContainer[SplitLeg]
    attempt: int
    def __init__(self, broker: _Optional[str] = ..., execution_method: _Optional[_Union[ExecutionMethod, str]] = ..., priority: _Optional[int] = ..., estimated_fees: _Optional[str] = ..., estimated_latency_ms: _Optional[float] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ..., policy: _Optional[_Union[RoutingPolicy, str]] = ..., estimated_cost: _Optional[str] = ..., legs: _Optional[_Iterable[_Union[SplitLeg, _Mapping]]] = ..., attempt: _Optional[int] = ...) -> None: ...

class BookLevel(_message.Message):
    __slots__ = ("price", "quantity")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    price: str
    quantity: str
    def __init__(self, price: _Optional[str] = ..., quantity: _Optional[str] = ...) -> None: ...

class Fill(_message.Message):
    __slots__ = ("venue_trade_id", "price", "quantity", "fee", "fee_currency", "liquidity", "time")
    VENUE_TRADE_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    FEE_FIELD_NUMBER: _ClassVar[int]
    FEE_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LIQUIDITY_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    venue_trade_id: str
    price: str
    quantity: str
    fee: str
    fee_currency: str
    liquidity: Liquidity
    time: _timestamp_pb2.Timestamp
    def __init__(self, venue_trade_id: _Optional[str] = ..., price: _Optional[str] = ..., quantity: _Optional[str] = ..., fee: _Optional[str] = ..., fee_currency: _Optional[str] = ..., liquidity: _Optional[_Union[Liquidity, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ExecutionUpdate(_message.Message):
    __slots__ = ("signal_id", "user_id", "sequence", "status", "broker", "pair", "side", "fills", "reason", "filled_quantity", "filled_notional", "fees_total", "average_price", "order_quantity", "client_order_id", "venue_order_id", "time", "route", "update_id", "parent_signal_id")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    FILLS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FILLED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    FILLED_NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    FEES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    ORDER_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    user_id: str
    sequence: int
    status: ExecutionStatus
    broker: str
    pair: str
    side: Side
    fills: _containers.RepeatedCompositeFieldContainer[Fill]
    reason: str
    filled_quantity: str
    filled_notional: str
    fees_total: str
    average_price: str
    order_quantity: str
    client_order_id: str
    venue_order_id: str
    time: _timestamp_pb2.Timestamp
    route: RouteDecision
    update_id: str
    parent_signal_id: str
    def __init__(self, signal_id: _Optional[str] = ..., user_id: _Optional[str] = ..., sequence: _Optional[int] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., broker: _Optional[str] = ..., pair: _Optional[str] = ..., side: _Optional[_Union[Side, str]] = ..., fills: _Optional[_Iterable[_Union[Fill, _Mapping]]] = ..., reason: _Optional[str] = ..., filled_quantity: _Optional[str] = ..., filled_notional: _Optional[str] = ..., fees_total: _Optional[str] = ..., average_price: _Optional[str] = ..., order_quantity: _Optional[str] = ..., client_order_id: _Optional[str] = ..., venue_order_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., route: _Optional[_Union[RouteDecision, _Mapping]] = ..., update_id: _Optional[str] = ..., parent_signal_id: _Optional[str] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
