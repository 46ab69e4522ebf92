from nija.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DenialCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DENIAL_CODE_UNSPECIFIED: _ClassVar[DenialCode]
    DENIAL_CODE_USER_DISABLED: _ClassVar[DenialCode]
    DENIAL_CODE_PAIR_NOT_ALLOWED: _ClassVar[DenialCode]
    DENIAL_CODE_SIZE_ABOVE_MAX: _ClassVar[DenialCode]
    DENIAL_CODE_NO_ALLOWED_BROKER: _ClassVar[DenialCode]
DENIAL_CODE_UNSPECIFIED: DenialCode
DENIAL_CODE_USER_DISABLED: DenialCode
DENIAL_CODE_PAIR_NOT_ALLOWED: DenialCode
DENIAL_CODE_SIZE_ABOVE_MAX: DenialCode
DENIAL_CODE_NO_ALLOWED_BROKER: DenialCode

class CheckTradeRequest(_message.Message):
    __slots__ = ("user_id", "pair", "side", "size_usd", "signal_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    SIZE_USD_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    pair: str
    side: _common_pb2.Side
    size_usd: str
    signal_id: str
    def __init__(self, user_id: _Optional[str] = ..., pair: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., size_usd: _Optional[str] = ..., signal_id: _Optional[str] = ...) -> None: ...

class CheckTradeResponse(_message.Message):
    __slots__ = ("allowed", "reason", "denial_code", "allowed_brokers", "preferences")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DENIAL_CODE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_BROKERS_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    denial_code: DenialCode
    allowed_brokers: _containers.RepeatedScalarFieldContainer[str]
    preferences: RoutingPreferences
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[str] = ..., denial_code: _Optional[_Union[DenialCode, str]] = ..., allowed_brokers: _Optional[_Iterable[str]] = ..., preferences: _Optional[_Union[RoutingPreferences, _Mapping]] = ...) -> None: ...

class RoutingPreferences(_message.Message):
    __slots__ = ("preferred_brokers", "blocked_brokers", "routing_policy", "max_slippage_bps")
    PREFERRED_BROKERS_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_BROKERS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_SLIPPAGE_BPS_FIELD_NUMBER: _ClassVar[int]
    preferred_brokers: _containers.RepeatedScalarFieldContainer[str]
    blocked_brokers: _containers.RepeatedScalarFieldContainer[str]
    routing_policy: _common_pb2.RoutingPolicy
    max_slippage_bps: int
    def __init__(self, preferred_brokers: _Optional[_Iterable[str]] = ..., blocked_brokers: _Optional[_Iterable[str]] = ..., routing_policy: _Optional[_Union[_common_pb2.RoutingPolicy, str]] = ..., max_slippage_bps: _Optional[int] = ...) -> None: ...

class UserPermissions(_message.Message):
    __slots__ = ("user_id", "enabled", "allowed_brokers", "allowed_pairs", "max_order_size_usd", "preferences")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_BROKERS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_PAIRS_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_SIZE_USD_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    enabled: bool
    allowed_brokers: _containers.RepeatedScalarFieldContainer[str]
    allowed_pairs: _containers.RepeatedScalarFieldContainer[str]
    max_order_size_usd: str
    preferences: RoutingPreferences
    def __init__(self, user_id: _Optional[str] = ..., enabled: _Optional[bool] = ..., allowed_brokers: _Optional[_Iterable[str]] = ..., allowed_pairs: _Optional[_Iterable[str]] = ..., max_order_size_usd: _Optional[str] = ..., preferences: _Optional[_Union[RoutingPreferences, _Mapping]] = ...) -> None: ...

class GetUserPermissionsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetUserPermissionsResponse(_message.Message):
    __slots__ = ("permissions",)
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    permissions: UserPermissions
    def __init__(self, permissions: _Optional[_Union[UserPermissions, _Mapping]] = ...) -> None: ...
