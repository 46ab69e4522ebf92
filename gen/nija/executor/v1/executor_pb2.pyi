from nija.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckAccountRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class CheckAccountResponse(_message.Message):
    __slots__ = ("broker", "balances")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    BALANCES_FIELD_NUMBER: _ClassVar[int]
    broker: str
    balances: _containers.RepeatedCompositeFieldContainer[AccountBalance]
    def __init__(self, broker: _Optional[str] = ..., balances: _Optional[_Iterable[_Union[AccountBalance, _Mapping]]] = ...) -> None: ...

class AccountBalance(_message.Message):
    __slots__ = ("asset", "free", "locked")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    asset: str
    free: str
    locked: str
    def __init__(self, asset: _Optional[str] = ..., free: _Optional[str] = ..., locked: _Optional[str] = ...) -> None: ...

class CancelOrderRequest(_message.Message):
    __slots__ = ("user_id", "signal_id", "reason")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    signal_id: str
    reason: str
    def __init__(self, user_id: _Optional[str] = ..., signal_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelOrderResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("signal", "route")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    signal: _common_pb2.TradeSignal
    route: _common_pb2.RouteDecision
    def __init__(self, signal: _Optional[_Union[_common_pb2.TradeSignal, _Mapping]] = ..., route: _Optional[_Union[_common_pb2.RouteDecision, _Mapping]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: _common_pb2.ExecutionUpdate
    def __init__(self, update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ...) -> None: ...

class GetExecutorInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetExecutorInfoResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ExecutorInfo
    def __init__(self, info: _Optional[_Union[ExecutorInfo, _Mapping]] = ...) -> None: ...

class WatchExecutorInfoRequest(_message.Message):
    __slots__ = ("max_interval_ms",)
    MAX_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    max_interval_ms: int
    def __init__(self, max_interval_ms: _Optional[int] = ...) -> None: ...

class WatchExecutorInfoResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ExecutorInfo
    def __init__(self, info: _Optional[_Union[ExecutorInfo, _Mapping]] = ...) -> None: ...

class PairInfo(_message.Message):
    __slots__ = ("pair", "best_bid", "best_ask", "bid_liquidity_usd", "ask_liquidity_usd", "bids", "asks", "withdrawal_fee")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    BEST_BID_FIELD_NUMBER: _ClassVar[int]
    BEST_ASK_FIELD_NUMBER: _ClassVar[int]
    BID_LIQUIDITY_USD_FIELD_NUMBER: _ClassVar[int]
    ASK_LIQUIDITY_USD_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWAL_FEE_FIELD_NUMBER: _ClassVar[int]
    pair: str
    best_bid: str
    best_ask: str
    bid_liquidity_usd: str
    ask_liquidity_usd: str
    bids: _containers.RepeatedCompositeFieldContainer[_common_pb2.BookLevel]
    asks: _containers.RepeatedCompositeFieldContainer[_common_pb2.BookLevel]
    withdrawal_fee: str
    def __init__(self, pair: _Optional[str] = ..., best_bid: _Optional[str] = ..., best_ask: _Optional[str] = ..., bid_liquidity_usd: _Optional[str] = ..., ask_liquidity_usd: _Optional[str] = ..., bids: _Optional[_Iterable[_Union[_common_pb2.BookLevel, _Mapping]]] = ..., asks: _Optional[_Iterable[_Union[_common_pb2.BookLevel, _Mapping]]] = ..., withdrawal_fee: _Optional[str] = ...) -> None: ...

class ExecutorInfo(_message.Message):
    __slots__ = ("broker", "maker_fee", "taker_fee", "pairs", "queue_depth", "max_queue_size", "active_executions", "total_executions", "successful_executions", "success_rate", "avg_latency_ms", "breaker_state", "version", "requires_api_keys")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    MAKER_FEE_FIELD_NUMBER: _ClassVar[int]
    TAKER_FEE_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSFUL_EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    AVG_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_API_KEYS_FIELD_NUMBER: _ClassVar[int]
    broker: str
    maker_fee: str
    taker_fee: str
    pairs: _containers.RepeatedCompositeFieldContainer[PairInfo]
    queue_depth: int
    max_queue_size: int
    active_executions: int
    total_executions: int
    successful_executions: int
    success_rate: float
    avg_latency_ms: float
    breaker_state: _common_pb2.BreakerState
    version: int
    requires_api_keys: bool
    def __init__(self, broker: _Optional[str] = ..., maker_fee: _Optional[str] = ..., taker_fee: _Optional[str] = ..., pairs: _Optional[_Iterable[_Union[PairInfo, _Mapping]]] = ..., queue_depth: _Optional[int] = ..., max_queue_size: _Optional[int] = ..., active_executions: _Optional[int] = ..., total_executions: _Optional[int] = ..., successful_executions: _Optional[int] = ..., success_rate: _Optional[float] = ..., avg_latency_ms: _Optional[float] = ..., breaker_state: _Optional[_Union[_common_pb2.BreakerState, str]] = ..., version: _Optional[int] = ..., requires_api_keys: _Optional[bool] = ...) -> None: ...
