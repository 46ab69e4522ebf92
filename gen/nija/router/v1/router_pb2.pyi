import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nija.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StrategySignal(_message.Message):
    __slots__ = ("strategy_signal_id", "strategy_id", "pair", "side", "size_usd", "signal_type", "timestamp", "metadata", "limit_price")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STRATEGY_SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    SIZE_USD_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    strategy_signal_id: str
    strategy_id: str
    pair: str
    side: _common_pb2.Side
    size_usd: str
    signal_type: _common_pb2.SignalType
    timestamp: _timestamp_pb2.Timestamp
    metadata: _containers.ScalarMap[str, str]
    limit_price: str
    def __init__(self, strategy_signal_id: _Optional[str] = ..., strategy_id: _Optional[str] = ..., pair: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., size_usd: _Optional[str] = ..., signal_type: _Optional[_Union[_common_pb2.SignalType, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., limit_price: _Optional[str] = ...) -> None: ...

class SubmitStrategySignalRequest(_message.Message):
    __slots__ = ("signal",)
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    signal: StrategySignal
    def __init__(self, signal: _Optional[_Union[StrategySignal, _Mapping]] = ...) -> None: ...

class SubmitStrategySignalResponse(_message.Message):
    __slots__ = ("update", "skipped", "summary")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    update: _common_pb2.ExecutionUpdate
    skipped: SkippedSubscriber
    summary: FanOutSummary
    def __init__(self, update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ..., skipped: _Optional[_Union[SkippedSubscriber, _Mapping]] = ..., summary: _Optional[_Union[FanOutSummary, _Mapping]] = ...) -> None: ...

class SkippedSubscriber(_message.Message):
    __slots__ = ("user_id", "reason")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    reason: str
    def __init__(self, user_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FanOutSummary(_message.Message):
    __slots__ = ("strategy_signal_id", "subscribers", "orders", "skipped", "outcomes")
    class OutcomesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    STRATEGY_SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    strategy_signal_id: str
    subscribers: int
    orders: int
    skipped: int
    outcomes: _containers.ScalarMap[str, int]
    def __init__(self, strategy_signal_id: _Optional[str] = ..., subscribers: _Optional[int] = ..., orders: _Optional[int] = ..., skipped: _Optional[int] = ..., outcomes: _Optional[_Mapping[str, int]] = ...) -> None: ...

class CancelSignalRequest(_message.Message):
    __slots__ = ("user_id", "signal_id", "reason")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    signal_id: str
    reason: str
    def __init__(self, user_id: _Optional[str] = ..., signal_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelSignalResponse(_message.Message):
    __slots__ = ("brokers",)
    BROKERS_FIELD_NUMBER: _ClassVar[int]
    brokers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, brokers: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitSignalRequest(_message.Message):
    __slots__ = ("signal", "after_sequence")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    signal: _common_pb2.TradeSignal
    after_sequence: int
    def __init__(self, signal: _Optional[_Union[_common_pb2.TradeSignal, _Mapping]] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class SubmitSignalResponse(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: _common_pb2.ExecutionUpdate
    def __init__(self, update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ...) -> None: ...

class SubmitSignalsRequest(_message.Message):
    __slots__ = ("signal", "after_sequence")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    signal: _common_pb2.TradeSignal
    after_sequence: int
    def __init__(self, signal: _Optional[_Union[_common_pb2.TradeSignal, _Mapping]] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class SubmitSignalsResponse(_message.Message):
    __slots__ = ("update", "refusal")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    update: _common_pb2.ExecutionUpdate
    refusal: SignalRefusal
    def __init__(self, update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ..., refusal: _Optional[_Union[SignalRefusal, _Mapping]] = ...) -> None: ...

class SignalRefusal(_message.Message):
    __slots__ = ("signal_id", "user_id", "refusal")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    user_id: str
    refusal: _common_pb2.Refusal
    def __init__(self, signal_id: _Optional[str] = ..., user_id: _Optional[str] = ..., refusal: _Optional[_Union[_common_pb2.Refusal, _Mapping]] = ...) -> None: ...

class QuoteRouteRequest(_message.Message):
    __slots__ = ("signal",)
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    signal: _common_pb2.TradeSignal
    def __init__(self, signal: _Optional[_Union[_common_pb2.TradeSignal, _Mapping]] = ...) -> None: ...

class ScoreBreakdown(_message.Message):
    __slots__ = ("fee", "latency", "success", "load", "pair", "total")
    FEE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    fee: float
    latency: float
    success: float
    load: float
    pair: float
    total: float
    def __init__(self, fee: _Optional[float] = ..., latency: _Optional[float] = ..., success: _Optional[float] = ..., load: _Optional[float] = ..., pair: _Optional[float] = ..., total: _Optional[float] = ...) -> None: ...

class CostEstimate(_message.Message):
    __slots__ = ("fee_usd", "slippage_usd", "withdrawal_usd", "total_usd", "expected_price", "slippage_bps")
    FEE_USD_FIELD_NUMBER: _ClassVar[int]
    SLIPPAGE_USD_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWAL_USD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_USD_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_PRICE_FIELD_NUMBER: _ClassVar[int]
    SLIPPAGE_BPS_FIELD_NUMBER: _ClassVar[int]
    fee_usd: str
    slippage_usd: str
    withdrawal_usd: str
    total_usd: str
    expected_price: str
    slippage_bps: float
    def __init__(self, fee_usd: _Optional[str] = ..., slippage_usd: _Optional[str] = ..., withdrawal_usd: _Optional[str] = ..., total_usd: _Optional[str] = ..., expected_price: _Optional[str] = ..., slippage_bps: _Optional[float] = ...) -> None: ...

class BrokerQuote(_message.Message):
    __slots__ = ("broker", "eligible", "exclusion", "score", "cost", "liquidity_usd")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    EXCLUSION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    LIQUIDITY_USD_FIELD_NUMBER: _ClassVar[int]
    broker: str
    eligible: bool
    exclusion: str
    score: ScoreBreakdown
    cost: CostEstimate
    liquidity_usd: str
    def __init__(self, broker: _Optional[str] = ..., eligible: _Optional[bool] = ..., exclusion: _Optional[str] = ..., score: _Optional[_Union[ScoreBreakdown, _Mapping]] = ..., cost: _Optional[_Union[CostEstimate, _Mapping]] = ..., liquidity_usd: _Optional[str] = ...) -> None: ...

class QuoteRouteResponse(_message.Message):
    __slots__ = ("routable", "reason", "route", "brokers")
    ROUTABLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    BROKERS_FIELD_NUMBER: _ClassVar[int]
    routable: bool
    reason: str
    route: _common_pb2.RouteDecision
    brokers: _containers.RepeatedCompositeFieldContainer[BrokerQuote]
    def __init__(self, routable: _Optional[bool] = ..., reason: _Optional[str] = ..., route: _Optional[_Union[_common_pb2.RouteDecision, _Mapping]] = ..., brokers: _Optional[_Iterable[_Union[BrokerQuote, _Mapping]]] = ...) -> None: ...
