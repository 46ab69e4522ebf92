import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nija.common.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Order(_message.Message):
    __slots__ = ("user_id", "signal_id", "signal", "status", "broker", "order_quantity", "filled_quantity", "filled_notional", "fees_total", "average_price", "last_sequence", "created_at", "updated_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    ORDER_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    FILLED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    FILLED_NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    FEES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    signal_id: str
    signal: _common_pb2.TradeSignal
    status: _common_pb2.ExecutionStatus
    broker: str
    order_quantity: str
    filled_quantity: str
    filled_notional: str
    fees_total: str
    average_price: str
    last_sequence: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., signal_id: _Optional[str] = ..., signal: _Optional[_Union[_common_pb2.TradeSignal, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.ExecutionStatus, str]] = ..., broker: _Optional[str] = ..., order_quantity: _Optional[str] = ..., filled_quantity: _Optional[str] = ..., filled_notional: _Optional[str] = ..., fees_total: _Optional[str] = ..., average_price: _Optional[str] = ..., last_sequence: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateOrderRequest(_message.Message):
    __slots__ = ("signal",)
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    signal: _common_pb2.TradeSignal
    def __init__(self, signal: _Optional[_Union[_common_pb2.TradeSignal, _Mapping]] = ...) -> None: ...

class CreateOrderResponse(_message.Message):
    __slots__ = ("created", "order", "update")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    created: bool
    order: Order
    update: _common_pb2.ExecutionUpdate
    def __init__(self, created: _Optional[bool] = ..., order: _Optional[_Union[Order, _Mapping]] = ..., update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ...) -> None: ...

class RecordUpdateRequest(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: _common_pb2.ExecutionUpdate
    def __init__(self, update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ...) -> None: ...

class RecordUpdateResponse(_message.Message):
    __slots__ = ("update", "duplicate")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    update: _common_pb2.ExecutionUpdate
    duplicate: bool
    def __init__(self, update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class WatchUpdatesRequest(_message.Message):
    __slots__ = ("user_id", "after_sequence", "signal_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    after_sequence: int
    signal_id: str
    def __init__(self, user_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., signal_id: _Optional[str] = ...) -> None: ...

class WatchUpdatesResponse(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: _common_pb2.ExecutionUpdate
    def __init__(self, update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("user_id", "signal_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    signal_id: str
    def __init__(self, user_id: _Optional[str] = ..., signal_id: _Optional[str] = ...) -> None: ...

class GetOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: Order
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ...) -> None: ...
