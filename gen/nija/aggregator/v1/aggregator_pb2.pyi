import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nija.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NotificationEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTIFICATION_EVENT_UNSPECIFIED: _ClassVar[NotificationEvent]
    NOTIFICATION_EVENT_FILL: _ClassVar[NotificationEvent]
    NOTIFICATION_EVENT_REJECTED: _ClassVar[NotificationEvent]
    NOTIFICATION_EVENT_KILL_SWITCH: _ClassVar[NotificationEvent]

class DeliveryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_STATUS_UNSPECIFIED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_PENDING: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_DELIVERED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_FAILED: _ClassVar[DeliveryStatus]
NOTIFICATION_EVENT_UNSPECIFIED: NotificationEvent
NOTIFICATION_EVENT_FILL: NotificationEvent
NOTIFICATION_EVENT_REJECTED: NotificationEvent
NOTIFICATION_EVENT_KILL_SWITCH: NotificationEvent
DELIVERY_STATUS_UNSPECIFIED: DeliveryStatus
DELIVERY_STATUS_PENDING: DeliveryStatus
DELIVERY_STATUS_DELIVERED: DeliveryStatus
DELIVERY_STATUS_FAILED: DeliveryStatus

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
    __slots__ = ("signal", "submission_id")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    signal: _common_pb2.TradeSignal
    submission_id: str
    def __init__(self, signal: _Optional[_Union[_common_pb2.TradeSignal, _Mapping]] = ..., submission_id: _Optional[str] = ...) -> None: ...

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

class RecordUpdatesRequest(_message.Message):
    __slots__ = ("request_id", "update")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    update: _common_pb2.ExecutionUpdate
    def __init__(self, request_id: _Optional[int] = ..., update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ...) -> None: ...

class RecordUpdatesResponse(_message.Message):
    __slots__ = ("request_id", "recorded", "refusal")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    recorded: RecordUpdateResponse
    refusal: _common_pb2.Refusal
    def __init__(self, request_id: _Optional[int] = ..., recorded: _Optional[_Union[RecordUpdateResponse, _Mapping]] = ..., refusal: _Optional[_Union[_common_pb2.Refusal, _Mapping]] = ...) -> None: ...

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

class ListOrdersRequest(_message.Message):
    __slots__ = ("user_id", "statuses", "pair", "broker", "created_from", "created_before", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    CREATED_FROM_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    statuses: _containers.RepeatedScalarFieldContainer[_common_pb2.ExecutionStatus]
    pair: str
    broker: str
    created_from: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[_common_pb2.ExecutionStatus, str]]] = ..., pair: _Optional[str] = ..., broker: _Optional[str] = ..., created_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[Order]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[Order, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListFillsRequest(_message.Message):
    __slots__ = ("user_id", "signal_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    signal_id: str
    def __init__(self, user_id: _Optional[str] = ..., signal_id: _Optional[str] = ...) -> None: ...

class RecordedFill(_message.Message):
    __slots__ = ("signal_id", "broker", "sequence", "fill")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FILL_FIELD_NUMBER: _ClassVar[int]
    signal_id: str
    broker: str
    sequence: int
    fill: _common_pb2.Fill
    def __init__(self, signal_id: _Optional[str] = ..., broker: _Optional[str] = ..., sequence: _Optional[int] = ..., fill: _Optional[_Union[_common_pb2.Fill, _Mapping]] = ...) -> None: ...

class ListFillsResponse(_message.Message):
    __slots__ = ("fills",)
    FILLS_FIELD_NUMBER: _ClassVar[int]
    fills: _containers.RepeatedCompositeFieldContainer[RecordedFill]
    def __init__(self, fills: _Optional[_Iterable[_Union[RecordedFill, _Mapping]]] = ...) -> None: ...

class GetDailySummaryRequest(_message.Message):
    __slots__ = ("user_id", "day")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DAY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    day: str
    def __init__(self, user_id: _Optional[str] = ..., day: _Optional[str] = ...) -> None: ...

class BrokerSummary(_message.Message):
    __slots__ = ("broker", "orders", "fills", "traded_notional", "fees", "realized_pnl")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    FILLS_FIELD_NUMBER: _ClassVar[int]
    TRADED_NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    FEES_FIELD_NUMBER: _ClassVar[int]
    REALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    broker: str
    orders: int
    fills: int
    traded_notional: str
    fees: str
    realized_pnl: str
    def __init__(self, broker: _Optional[str] = ..., orders: _Optional[int] = ..., fills: _Optional[int] = ..., traded_notional: _Optional[str] = ..., fees: _Optional[str] = ..., realized_pnl: _Optional[str] = ...) -> None: ...

class GetDailySummaryResponse(_message.Message):
    __slots__ = ("day", "brokers", "total")
    DAY_FIELD_NUMBER: _ClassVar[int]
    BROKERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    day: str
    brokers: _containers.RepeatedCompositeFieldContainer[BrokerSummary]
    total: BrokerSummary
    def __init__(self, day: _Optional[str] = ..., brokers: _Optional[_Iterable[_Union[BrokerSummary, _Mapping]]] = ..., total: _Optional[_Union[BrokerSummary, _Mapping]] = ...) -> None: ...

class Webhook(_message.Message):
    __slots__ = ("webhook_id", "user_id", "url", "events", "created_at", "updated_at")
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    webhook_id: str
    user_id: str
    url: str
    events: _containers.RepeatedScalarFieldContainer[NotificationEvent]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, webhook_id: _Optional[str] = ..., user_id: _Optional[str] = ..., url: _Optional[str] = ..., events: _Optional[_Iterable[_Union[NotificationEvent, str]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetWebhookRequest(_message.Message):
    __slots__ = ("user_id", "url", "events")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    url: str
    events: _containers.RepeatedScalarFieldContainer[NotificationEvent]
    def __init__(self, user_id: _Optional[str] = ..., url: _Optional[str] = ..., events: _Optional[_Iterable[_Union[NotificationEvent, str]]] = ...) -> None: ...

class SetWebhookResponse(_message.Message):
    __slots__ = ("webhook", "secret", "created")
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    webhook: Webhook
    secret: str
    created: bool
    def __init__(self, webhook: _Optional[_Union[Webhook, _Mapping]] = ..., secret: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class ListWebhooksRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListWebhooksResponse(_message.Message):
    __slots__ = ("webhooks",)
    WEBHOOKS_FIELD_NUMBER: _ClassVar[int]
    webhooks: _containers.RepeatedCompositeFieldContainer[Webhook]
    def __init__(self, webhooks: _Optional[_Iterable[_Union[Webhook, _Mapping]]] = ...) -> None: ...

class DeleteWebhookRequest(_message.Message):
    __slots__ = ("user_id", "webhook_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    webhook_id: str
    def __init__(self, user_id: _Optional[str] = ..., webhook_id: _Optional[str] = ...) -> None: ...

class DeleteWebhookResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("delivery_id", "webhook_id", "event", "sequence", "status", "attempts", "last_error", "next_attempt_at", "delivered_at", "created_at")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    webhook_id: str
    event: NotificationEvent
    sequence: int
    status: DeliveryStatus
    attempts: int
    last_error: str
    next_attempt_at: _timestamp_pb2.Timestamp
    delivered_at: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, delivery_id: _Optional[str] = ..., webhook_id: _Optional[str] = ..., event: _Optional[_Union[NotificationEvent, str]] = ..., sequence: _Optional[int] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ..., attempts: _Optional[int] = ..., last_error: _Optional[str] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delivered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListDeliveriesRequest(_message.Message):
    __slots__ = ("user_id", "webhook_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    webhook_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., webhook_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries", "next_page_token")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    next_page_token: str
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
