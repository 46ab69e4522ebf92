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

class FaultMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAULT_MODE_UNSPECIFIED: _ClassVar[FaultMode]
    FAULT_MODE_NONE: _ClassVar[FaultMode]
    FAULT_MODE_UNAVAILABLE: _ClassVar[FaultMode]

class OrderType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_TYPE_UNSPECIFIED: _ClassVar[OrderType]
    ORDER_TYPE_MARKET: _ClassVar[OrderType]
    ORDER_TYPE_LIMIT: _ClassVar[OrderType]

class OrderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_STATE_UNSPECIFIED: _ClassVar[OrderState]
    ORDER_STATE_OPEN: _ClassVar[OrderState]
    ORDER_STATE_PARTIALLY_FILLED: _ClassVar[OrderState]
    ORDER_STATE_FILLED: _ClassVar[OrderState]
    ORDER_STATE_CANCELLED: _ClassVar[OrderState]
FAULT_MODE_UNSPECIFIED: FaultMode
FAULT_MODE_NONE: FaultMode
FAULT_MODE_UNAVAILABLE: FaultMode
ORDER_TYPE_UNSPECIFIED: OrderType
ORDER_TYPE_MARKET: OrderType
ORDER_TYPE_LIMIT: OrderType
ORDER_STATE_UNSPECIFIED: OrderState
ORDER_STATE_OPEN: OrderState
ORDER_STATE_PARTIALLY_FILLED: OrderState
ORDER_STATE_FILLED: OrderState
ORDER_STATE_CANCELLED: OrderState

class SetFaultRequest(_message.Message):
    __slots__ = ("broker", "mode", "latency_ms", "error_rate", "lose_response_rate", "rate_limit_rate", "retry_after_ms", "seed")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    LOSE_RESPONSE_RATE_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_RATE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    broker: str
    mode: FaultMode
    latency_ms: int
    error_rate: float
    lose_response_rate: float
    rate_limit_rate: float
    retry_after_ms: int
    seed: int
    def __init__(self, broker: _Optional[str] = ..., mode: _Optional[_Union[FaultMode, str]] = ..., latency_ms: _Optional[int] = ..., error_rate: _Optional[float] = ..., lose_response_rate: _Optional[float] = ..., rate_limit_rate: _Optional[float] = ..., retry_after_ms: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class SetFaultResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Market(_message.Message):
    __slots__ = ("pair", "base", "quote", "tick_size", "lot_size", "min_quantity", "min_notional", "withdrawal_fee")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    QUOTE_FIELD_NUMBER: _ClassVar[int]
    TICK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MIN_NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWAL_FEE_FIELD_NUMBER: _ClassVar[int]
    pair: str
    base: str
    quote: str
    tick_size: str
    lot_size: str
    min_quantity: str
    min_notional: str
    withdrawal_fee: str
    def __init__(self, pair: _Optional[str] = ..., base: _Optional[str] = ..., quote: _Optional[str] = ..., tick_size: _Optional[str] = ..., lot_size: _Optional[str] = ..., min_quantity: _Optional[str] = ..., min_notional: _Optional[str] = ..., withdrawal_fee: _Optional[str] = ...) -> None: ...

class FeeSchedule(_message.Message):
    __slots__ = ("maker", "taker")
    MAKER_FIELD_NUMBER: _ClassVar[int]
    TAKER_FIELD_NUMBER: _ClassVar[int]
    maker: str
    taker: str
    def __init__(self, maker: _Optional[str] = ..., taker: _Optional[str] = ...) -> None: ...

class ListMarketsRequest(_message.Message):
    __slots__ = ("broker",)
    BROKER_FIELD_NUMBER: _ClassVar[int]
    broker: str
    def __init__(self, broker: _Optional[str] = ...) -> None: ...

class ListMarketsResponse(_message.Message):
    __slots__ = ("markets", "fees")
    MARKETS_FIELD_NUMBER: _ClassVar[int]
    FEES_FIELD_NUMBER: _ClassVar[int]
    markets: _containers.RepeatedCompositeFieldContainer[Market]
    fees: FeeSchedule
    def __init__(self, markets: _Optional[_Iterable[_Union[Market, _Mapping]]] = ..., fees: _Optional[_Union[FeeSchedule, _Mapping]] = ...) -> None: ...

class BookLevel(_message.Message):
    __slots__ = ("price", "quantity")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    price: str
    quantity: str
    def __init__(self, price: _Optional[str] = ..., quantity: _Optional[str] = ...) -> None: ...

class GetOrderBookRequest(_message.Message):
    __slots__ = ("broker", "pair", "depth")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    broker: str
    pair: str
    depth: int
    def __init__(self, broker: _Optional[str] = ..., pair: _Optional[str] = ..., depth: _Optional[int] = ...) -> None: ...

class GetOrderBookResponse(_message.Message):
    __slots__ = ("bids", "asks", "time")
    BIDS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    bids: _containers.RepeatedCompositeFieldContainer[BookLevel]
    asks: _containers.RepeatedCompositeFieldContainer[BookLevel]
    time: _timestamp_pb2.Timestamp
    def __init__(self, bids: _Optional[_Iterable[_Union[BookLevel, _Mapping]]] = ..., asks: _Optional[_Iterable[_Union[BookLevel, _Mapping]]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class VenueOrder(_message.Message):
    __slots__ = ("venue_order_id", "client_order_id", "pair", "side", "order_type", "quantity", "limit_price", "state", "filled_quantity", "filled_notional", "fees", "fills", "created_at", "account_id")
    VENUE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FILLED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    FILLED_NOTIONAL_FIELD_NUMBER: _ClassVar[int]
    FEES_FIELD_NUMBER: _ClassVar[int]
    FILLS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    venue_order_id: str
    client_order_id: str
    pair: str
    side: _common_pb2.Side
    order_type: OrderType
    quantity: str
    limit_price: str
    state: OrderState
    filled_quantity: str
    filled_notional: str
    fees: str
    fills: _containers.RepeatedCompositeFieldContainer[_common_pb2.Fill]
    created_at: _timestamp_pb2.Timestamp
    account_id: str
    def __init__(self, venue_order_id: _Optional[str] = ..., client_order_id: _Optional[str] = ..., pair: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., order_type: _Optional[_Union[OrderType, str]] = ..., quantity: _Optional[str] = ..., limit_price: _Optional[str] = ..., state: _Optional[_Union[OrderState, str]] = ..., filled_quantity: _Optional[str] = ..., filled_notional: _Optional[str] = ..., fees: _Optional[str] = ..., fills: _Optional[_Iterable[_Union[_common_pb2.Fill, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., account_id: _Optional[str] = ...) -> None: ...

class PlaceOrderRequest(_message.Message):
    __slots__ = ("broker", "account_id", "client_order_id", "pair", "side", "order_type", "quantity", "limit_price")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    broker: str
    account_id: str
    client_order_id: str
    pair: str
    side: _common_pb2.Side
    order_type: OrderType
    quantity: str
    limit_price: str
    def __init__(self, broker: _Optional[str] = ..., account_id: _Optional[str] = ..., client_order_id: _Optional[str] = ..., pair: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., order_type: _Optional[_Union[OrderType, str]] = ..., quantity: _Optional[str] = ..., limit_price: _Optional[str] = ...) -> None: ...

class PlaceOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: VenueOrder
    def __init__(self, order: _Optional[_Union[VenueOrder, _Mapping]] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("broker", "account_id", "client_order_id", "venue_order_id")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    broker: str
    account_id: str
    client_order_id: str
    venue_order_id: str
    def __init__(self, broker: _Optional[str] = ..., account_id: _Optional[str] = ..., client_order_id: _Optional[str] = ..., venue_order_id: _Optional[str] = ...) -> None: ...

class GetOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: VenueOrder
    def __init__(self, order: _Optional[_Union[VenueOrder, _Mapping]] = ...) -> None: ...

class CancelOrderRequest(_message.Message):
    __slots__ = ("broker", "account_id", "client_order_id", "venue_order_id")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    broker: str
    account_id: str
    client_order_id: str
    venue_order_id: str
    def __init__(self, broker: _Optional[str] = ..., account_id: _Optional[str] = ..., client_order_id: _Optional[str] = ..., venue_order_id: _Optional[str] = ...) -> None: ...

class CancelOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: VenueOrder
    def __init__(self, order: _Optional[_Union[VenueOrder, _Mapping]] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("asset", "free", "locked")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    asset: str
    free: str
    locked: str
    def __init__(self, asset: _Optional[str] = ..., free: _Optional[str] = ..., locked: _Optional[str] = ...) -> None: ...

class GetBalancesRequest(_message.Message):
    __slots__ = ("broker", "account_id")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    broker: str
    account_id: str
    def __init__(self, broker: _Optional[str] = ..., account_id: _Optional[str] = ...) -> None: ...

class GetBalancesResponse(_message.Message):
    __slots__ = ("balances",)
    BALANCES_FIELD_NUMBER: _ClassVar[int]
    balances: _containers.RepeatedCompositeFieldContainer[Balance]
    def __init__(self, balances: _Optional[_Iterable[_Union[Balance, _Mapping]]] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("broker", "account_id", "page_size", "page_token")
    BROKER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    broker: str
    account_id: str
    page_size: int
    page_token: str
    def __init__(self, broker: _Optional[str] = ..., account_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[VenueOrder]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[VenueOrder, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
