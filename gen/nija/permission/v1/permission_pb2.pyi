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

class DenialCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DENIAL_CODE_UNSPECIFIED: _ClassVar[DenialCode]
    DENIAL_CODE_USER_DISABLED: _ClassVar[DenialCode]
    DENIAL_CODE_PAIR_NOT_ALLOWED: _ClassVar[DenialCode]
    DENIAL_CODE_SIZE_ABOVE_MAX: _ClassVar[DenialCode]
    DENIAL_CODE_NO_ALLOWED_BROKER: _ClassVar[DenialCode]
    DENIAL_CODE_KILL_SWITCH: _ClassVar[DenialCode]
    DENIAL_CODE_RATE_LIMITED: _ClassVar[DenialCode]
    DENIAL_CODE_POSITION_LIMIT: _ClassVar[DenialCode]
    DENIAL_CODE_OPEN_POSITIONS_LIMIT: _ClassVar[DenialCode]
    DENIAL_CODE_DAILY_NOTIONAL_LIMIT: _ClassVar[DenialCode]
    DENIAL_CODE_DAILY_LOSS_LIMIT: _ClassVar[DenialCode]

class PrincipalKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRINCIPAL_KIND_UNSPECIFIED: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_USER: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_STRATEGY: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_ADMIN: _ClassVar[PrincipalKind]
    PRINCIPAL_KIND_SERVICE: _ClassVar[PrincipalKind]
DENIAL_CODE_UNSPECIFIED: DenialCode
DENIAL_CODE_USER_DISABLED: DenialCode
DENIAL_CODE_PAIR_NOT_ALLOWED: DenialCode
DENIAL_CODE_SIZE_ABOVE_MAX: DenialCode
DENIAL_CODE_NO_ALLOWED_BROKER: DenialCode
DENIAL_CODE_KILL_SWITCH: DenialCode
DENIAL_CODE_RATE_LIMITED: DenialCode
DENIAL_CODE_POSITION_LIMIT: DenialCode
DENIAL_CODE_OPEN_POSITIONS_LIMIT: DenialCode
DENIAL_CODE_DAILY_NOTIONAL_LIMIT: DenialCode
DENIAL_CODE_DAILY_LOSS_LIMIT: DenialCode
PRINCIPAL_KIND_UNSPECIFIED: PrincipalKind
PRINCIPAL_KIND_USER: PrincipalKind
PRINCIPAL_KIND_STRATEGY: PrincipalKind
PRINCIPAL_KIND_ADMIN: PrincipalKind
PRINCIPAL_KIND_SERVICE: PrincipalKind

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
    __slots__ = ("allowed", "reason", "denial_code", "allowed_brokers", "preferences", "api_key_brokers")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DENIAL_CODE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_BROKERS_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    API_KEY_BROKERS_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    denial_code: DenialCode
    allowed_brokers: _containers.RepeatedScalarFieldContainer[str]
    preferences: RoutingPreferences
    api_key_brokers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[str] = ..., denial_code: _Optional[_Union[DenialCode, str]] = ..., allowed_brokers: _Optional[_Iterable[str]] = ..., preferences: _Optional[_Union[RoutingPreferences, _Mapping]] = ..., api_key_brokers: _Optional[_Iterable[str]] = ...) -> None: ...

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
    __slots__ = ("user_id", "enabled", "allowed_brokers", "allowed_pairs", "max_order_size_usd", "preferences", "limits")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_BROKERS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_PAIRS_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_SIZE_USD_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    enabled: bool
    allowed_brokers: _containers.RepeatedScalarFieldContainer[str]
    allowed_pairs: _containers.RepeatedScalarFieldContainer[str]
    max_order_size_usd: str
    preferences: RoutingPreferences
    limits: RiskLimits
    def __init__(self, user_id: _Optional[str] = ..., enabled: _Optional[bool] = ..., allowed_brokers: _Optional[_Iterable[str]] = ..., allowed_pairs: _Optional[_Iterable[str]] = ..., max_order_size_usd: _Optional[str] = ..., preferences: _Optional[_Union[RoutingPreferences, _Mapping]] = ..., limits: _Optional[_Union[RiskLimits, _Mapping]] = ...) -> None: ...

class RiskLimits(_message.Message):
    __slots__ = ("max_position_usd", "max_open_positions", "max_daily_notional_usd", "max_daily_loss_usd", "trades_per_second", "trade_burst")
    MAX_POSITION_USD_FIELD_NUMBER: _ClassVar[int]
    MAX_OPEN_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_DAILY_NOTIONAL_USD_FIELD_NUMBER: _ClassVar[int]
    MAX_DAILY_LOSS_USD_FIELD_NUMBER: _ClassVar[int]
    TRADES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TRADE_BURST_FIELD_NUMBER: _ClassVar[int]
    max_position_usd: str
    max_open_positions: int
    max_daily_notional_usd: str
    max_daily_loss_usd: str
    trades_per_second: str
    trade_burst: int
    def __init__(self, max_position_usd: _Optional[str] = ..., max_open_positions: _Optional[int] = ..., max_daily_notional_usd: _Optional[str] = ..., max_daily_loss_usd: _Optional[str] = ..., trades_per_second: _Optional[str] = ..., trade_burst: _Optional[int] = ...) -> None: ...

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

class ReserveTradeRequest(_message.Message):
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

class ReserveTradeResponse(_message.Message):
    __slots__ = ("allowed", "reason", "denial_code", "allowed_brokers", "preferences", "replayed", "api_key_brokers")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DENIAL_CODE_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_BROKERS_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    API_KEY_BROKERS_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    denial_code: DenialCode
    allowed_brokers: _containers.RepeatedScalarFieldContainer[str]
    preferences: RoutingPreferences
    replayed: bool
    api_key_brokers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[str] = ..., denial_code: _Optional[_Union[DenialCode, str]] = ..., allowed_brokers: _Optional[_Iterable[str]] = ..., preferences: _Optional[_Union[RoutingPreferences, _Mapping]] = ..., replayed: _Optional[bool] = ..., api_key_brokers: _Optional[_Iterable[str]] = ...) -> None: ...

class ReleaseReservationRequest(_message.Message):
    __slots__ = ("user_id", "signal_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    signal_id: str
    def __init__(self, user_id: _Optional[str] = ..., signal_id: _Optional[str] = ...) -> None: ...

class ReleaseReservationResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...

class ApplyExecutionRequest(_message.Message):
    __slots__ = ("update", "broker")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    update: _common_pb2.ExecutionUpdate
    broker: str
    def __init__(self, update: _Optional[_Union[_common_pb2.ExecutionUpdate, _Mapping]] = ..., broker: _Optional[str] = ...) -> None: ...

class ApplyExecutionsRequest(_message.Message):
    __slots__ = ("executions",)
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[ApplyExecutionRequest]
    def __init__(self, executions: _Optional[_Iterable[_Union[ApplyExecutionRequest, _Mapping]]] = ...) -> None: ...

class ApplyExecutionsResponse(_message.Message):
    __slots__ = ("new_fills",)
    NEW_FILLS_FIELD_NUMBER: _ClassVar[int]
    new_fills: int
    def __init__(self, new_fills: _Optional[int] = ...) -> None: ...

class ApplyExecutionResponse(_message.Message):
    __slots__ = ("new_fills",)
    NEW_FILLS_FIELD_NUMBER: _ClassVar[int]
    new_fills: int
    def __init__(self, new_fills: _Optional[int] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("pair", "quantity", "average_entry_price", "cost_basis", "realized_pnl", "fees")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_ENTRY_PRICE_FIELD_NUMBER: _ClassVar[int]
    COST_BASIS_FIELD_NUMBER: _ClassVar[int]
    REALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    FEES_FIELD_NUMBER: _ClassVar[int]
    pair: str
    quantity: str
    average_entry_price: str
    cost_basis: str
    realized_pnl: str
    fees: str
    def __init__(self, pair: _Optional[str] = ..., quantity: _Optional[str] = ..., average_entry_price: _Optional[str] = ..., cost_basis: _Optional[str] = ..., realized_pnl: _Optional[str] = ..., fees: _Optional[str] = ...) -> None: ...

class DailyUsage(_message.Message):
    __slots__ = ("day", "traded_usd", "realized_pnl", "fees", "reserved_usd", "open_reservations")
    DAY_FIELD_NUMBER: _ClassVar[int]
    TRADED_USD_FIELD_NUMBER: _ClassVar[int]
    REALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    FEES_FIELD_NUMBER: _ClassVar[int]
    RESERVED_USD_FIELD_NUMBER: _ClassVar[int]
    OPEN_RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    day: str
    traded_usd: str
    realized_pnl: str
    fees: str
    reserved_usd: str
    open_reservations: int
    def __init__(self, day: _Optional[str] = ..., traded_usd: _Optional[str] = ..., realized_pnl: _Optional[str] = ..., fees: _Optional[str] = ..., reserved_usd: _Optional[str] = ..., open_reservations: _Optional[int] = ...) -> None: ...

class GetPositionsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetPositionsResponse(_message.Message):
    __slots__ = ("positions", "today")
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    TODAY_FIELD_NUMBER: _ClassVar[int]
    positions: _containers.RepeatedCompositeFieldContainer[Position]
    today: DailyUsage
    def __init__(self, positions: _Optional[_Iterable[_Union[Position, _Mapping]]] = ..., today: _Optional[_Union[DailyUsage, _Mapping]] = ...) -> None: ...

class Principal(_message.Message):
    __slots__ = ("kind", "subject", "subscribers")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBERS_FIELD_NUMBER: _ClassVar[int]
    kind: PrincipalKind
    subject: str
    subscribers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[_Union[PrincipalKind, str]] = ..., subject: _Optional[str] = ..., subscribers: _Optional[_Iterable[str]] = ...) -> None: ...

class AuthenticateRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class AuthenticateResponse(_message.Message):
    __slots__ = ("authenticated", "principal")
    AUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    authenticated: bool
    principal: Principal
    def __init__(self, authenticated: _Optional[bool] = ..., principal: _Optional[_Union[Principal, _Mapping]] = ...) -> None: ...

class ApiCredentials(_message.Message):
    __slots__ = ("api_key", "api_secret", "passphrase")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    API_SECRET_FIELD_NUMBER: _ClassVar[int]
    PASSPHRASE_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    api_secret: str
    passphrase: str
    def __init__(self, api_key: _Optional[str] = ..., api_secret: _Optional[str] = ..., passphrase: _Optional[str] = ...) -> None: ...

class GetCredentialsRequest(_message.Message):
    __slots__ = ("user_id", "broker")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    broker: str
    def __init__(self, user_id: _Optional[str] = ..., broker: _Optional[str] = ...) -> None: ...

class GetCredentialsResponse(_message.Message):
    __slots__ = ("credentials",)
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    credentials: ApiCredentials
    def __init__(self, credentials: _Optional[_Union[ApiCredentials, _Mapping]] = ...) -> None: ...

class WatchControlsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UserKillSwitch(_message.Message):
    __slots__ = ("user_id", "reason")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    reason: str
    def __init__(self, user_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchControlsResponse(_message.Message):
    __slots__ = ("global_kill", "global_reason", "users", "api_keys_version")
    GLOBAL_KILL_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_REASON_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    API_KEYS_VERSION_FIELD_NUMBER: _ClassVar[int]
    global_kill: bool
    global_reason: str
    users: _containers.RepeatedCompositeFieldContainer[UserKillSwitch]
    api_keys_version: str
    def __init__(self, global_kill: _Optional[bool] = ..., global_reason: _Optional[str] = ..., users: _Optional[_Iterable[_Union[UserKillSwitch, _Mapping]]] = ..., api_keys_version: _Optional[str] = ...) -> None: ...

class PutUserRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: UserPermissions
    def __init__(self, user: _Optional[_Union[UserPermissions, _Mapping]] = ...) -> None: ...

class PutUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: UserPermissions
    def __init__(self, user: _Optional[_Union[UserPermissions, _Mapping]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users",)
    USERS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[UserPermissions]
    def __init__(self, users: _Optional[_Iterable[_Union[UserPermissions, _Mapping]]] = ...) -> None: ...

class SetUserEnabledRequest(_message.Message):
    __slots__ = ("user_id", "enabled")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    enabled: bool
    def __init__(self, user_id: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class SetUserEnabledResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: UserPermissions
    def __init__(self, user: _Optional[_Union[UserPermissions, _Mapping]] = ...) -> None: ...

class SetLimitsRequest(_message.Message):
    __slots__ = ("user_id", "limits", "max_order_size_usd")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_SIZE_USD_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    limits: RiskLimits
    max_order_size_usd: str
    def __init__(self, user_id: _Optional[str] = ..., limits: _Optional[_Union[RiskLimits, _Mapping]] = ..., max_order_size_usd: _Optional[str] = ...) -> None: ...

class SetLimitsResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: UserPermissions
    def __init__(self, user: _Optional[_Union[UserPermissions, _Mapping]] = ...) -> None: ...

class SetKillSwitchRequest(_message.Message):
    __slots__ = ("user_id", "on", "reason")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    on: bool
    reason: str
    def __init__(self, user_id: _Optional[str] = ..., on: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class SetKillSwitchResponse(_message.Message):
    __slots__ = ("controls",)
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    controls: WatchControlsResponse
    def __init__(self, controls: _Optional[_Union[WatchControlsResponse, _Mapping]] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("token_id", "kind", "subject", "description", "created_at", "revoked_at")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    kind: PrincipalKind
    subject: str
    description: str
    created_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, token_id: _Optional[str] = ..., kind: _Optional[_Union[PrincipalKind, str]] = ..., subject: _Optional[str] = ..., description: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("kind", "subject", "description")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    kind: PrincipalKind
    subject: str
    description: str
    def __init__(self, kind: _Optional[_Union[PrincipalKind, str]] = ..., subject: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "info")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    token: str
    info: TokenInfo
    def __init__(self, token: _Optional[str] = ..., info: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    def __init__(self, subject: _Optional[str] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...

class ApiKeyInfo(_message.Message):
    __slots__ = ("user_id", "broker", "master_key_id", "updated_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    broker: str
    master_key_id: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., broker: _Optional[str] = ..., master_key_id: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SetApiKeysRequest(_message.Message):
    __slots__ = ("user_id", "broker", "credentials")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    broker: str
    credentials: ApiCredentials
    def __init__(self, user_id: _Optional[str] = ..., broker: _Optional[str] = ..., credentials: _Optional[_Union[ApiCredentials, _Mapping]] = ...) -> None: ...

class SetApiKeysResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: ApiKeyInfo
    def __init__(self, info: _Optional[_Union[ApiKeyInfo, _Mapping]] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKeyInfo, _Mapping]]] = ...) -> None: ...

class DeleteApiKeysRequest(_message.Message):
    __slots__ = ("user_id", "broker")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    broker: str
    def __init__(self, user_id: _Optional[str] = ..., broker: _Optional[str] = ...) -> None: ...

class DeleteApiKeysResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class RotateMasterKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateMasterKeyResponse(_message.Message):
    __slots__ = ("active_key_id", "resealed")
    ACTIVE_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    RESEALED_FIELD_NUMBER: _ClassVar[int]
    active_key_id: str
    resealed: int
    def __init__(self, active_key_id: _Optional[str] = ..., resealed: _Optional[int] = ...) -> None: ...

class SetSubscriptionRequest(_message.Message):
    __slots__ = ("strategy_id", "user_id", "subscribed", "allocation")
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    strategy_id: str
    user_id: str
    subscribed: bool
    allocation: Allocation
    def __init__(self, strategy_id: _Optional[str] = ..., user_id: _Optional[str] = ..., subscribed: _Optional[bool] = ..., allocation: _Optional[_Union[Allocation, _Mapping]] = ...) -> None: ...

class Allocation(_message.Message):
    __slots__ = ("fixed_usd", "percent_of_capital", "multiplier", "max_order_usd", "pairs")
    FIXED_USD_FIELD_NUMBER: _ClassVar[int]
    PERCENT_OF_CAPITAL_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDER_USD_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    fixed_usd: str
    percent_of_capital: PercentOfCapital
    multiplier: str
    max_order_usd: str
    pairs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fixed_usd: _Optional[str] = ..., percent_of_capital: _Optional[_Union[PercentOfCapital, _Mapping]] = ..., multiplier: _Optional[str] = ..., max_order_usd: _Optional[str] = ..., pairs: _Optional[_Iterable[str]] = ...) -> None: ...

class PercentOfCapital(_message.Message):
    __slots__ = ("percent", "capital_usd")
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    CAPITAL_USD_FIELD_NUMBER: _ClassVar[int]
    percent: str
    capital_usd: str
    def __init__(self, percent: _Optional[str] = ..., capital_usd: _Optional[str] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("strategy_id", "user_id", "allocation")
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    strategy_id: str
    user_id: str
    allocation: Allocation
    def __init__(self, strategy_id: _Optional[str] = ..., user_id: _Optional[str] = ..., allocation: _Optional[_Union[Allocation, _Mapping]] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("strategy_id", "user_id")
    STRATEGY_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    strategy_id: str
    user_id: str
    def __init__(self, strategy_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions",)
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ...) -> None: ...

class SetSubscriptionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
