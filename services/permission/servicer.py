"""gRPC adapters: proto in -> validated request -> store / keyring / checks -> proto out.

PermissionService is what the other services (and users, for their own records) call;
AdminService is for admin principals only. Who may call what is decided by the access rules in
app.py, before any of this runs; the one check left here is that an executor reads keys only for
its own broker.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from decimal import Decimal

import grpc
from google.protobuf import timestamp_pb2
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc

from services.domain.allocation import AllocationProblem
from services.domain.brokers import BROKERS
from services.domain.money import BadDecimal, fmt, parse_decimal, parse_positive
from services.domain.signal import SignalProblem, check_id, check_pair, check_size
from services.permission.accounts import Accounts, Controls, TokenAuthority
from services.permission.allocations import allocation_from_pb, describe, pb_path, subscription_to_pb
from services.permission.checks import Decision, Denial, TradeRequest, check_trade
from services.permission.client import KIND_FROM_PB, KIND_TO_PB
from services.permission.permissions import (
    BadPermissions,
    RiskLimits,
    RoutingPolicy,
    RoutingPreferences,
    UserPermissions,
)
from services.permission.positions import BadFill, ExecutionEvent, FillEvent, Position
from services.permission.store import StoreNotOpen, UnknownUser, UserStore
from services.runtime.auth import PrincipalKind, current_principal, logged_refusal
from services.runtime.errors import ServiceError, invalid, not_found, stream, unary
from services.runtime.wire import STATUS_FROM_PB, field_error, side_from_pb

log = logging.getLogger(__name__)

DENIAL_TO_PB = {
    Denial.USER_DISABLED: permission_pb2.DENIAL_CODE_USER_DISABLED,
    Denial.PAIR_NOT_ALLOWED: permission_pb2.DENIAL_CODE_PAIR_NOT_ALLOWED,
    Denial.SIZE_ABOVE_MAX: permission_pb2.DENIAL_CODE_SIZE_ABOVE_MAX,
    Denial.NO_ALLOWED_BROKER: permission_pb2.DENIAL_CODE_NO_ALLOWED_BROKER,
    Denial.KILL_SWITCH: permission_pb2.DENIAL_CODE_KILL_SWITCH,
    Denial.RATE_LIMITED: permission_pb2.DENIAL_CODE_RATE_LIMITED,
    Denial.POSITION_LIMIT: permission_pb2.DENIAL_CODE_POSITION_LIMIT,
    Denial.OPEN_POSITIONS_LIMIT: permission_pb2.DENIAL_CODE_OPEN_POSITIONS_LIMIT,
    Denial.DAILY_NOTIONAL_LIMIT: permission_pb2.DENIAL_CODE_DAILY_NOTIONAL_LIMIT,
    Denial.DAILY_LOSS_LIMIT: permission_pb2.DENIAL_CODE_DAILY_LOSS_LIMIT,
}

#: None (no preference) is UNSPECIFIED: the router applies its default.
POLICY_TO_PB = {
    None: common_pb2.ROUTING_POLICY_UNSPECIFIED,
    RoutingPolicy.SCORE: common_pb2.ROUTING_POLICY_SCORE,
    RoutingPolicy.COST: common_pb2.ROUTING_POLICY_COST,
}
POLICY_FROM_PB = {v: k for k, v in POLICY_TO_PB.items()}

#: API key fields: generous for every exchange's format, bounded against abuse.
MAX_CREDENTIAL_CHARS = 4096
#: Updates per ApplyExecutions call: one transaction holds them all, so it is kept short.
MAX_EXECUTIONS = 1000


class _Owner:
    """What both services work on: the store and the three keepers built on it."""

    def __init__(self, store: UserStore, accounts: Accounts, tokens: TokenAuthority, controls: Controls) -> None:
        self._store = store
        self._accounts = accounts
        self._tokens = tokens
        self._controls = controls


class PermissionServicer(_Owner, permission_pb2_grpc.PermissionServiceServicer):
    @unary
    async def CheckTrade(
        self, request: permission_pb2.CheckTradeRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.CheckTradeResponse:
        trade = trade_request_from_pb(request)
        view = await _guard(self._store.trade_view(trade.user_id))
        if view is None:
            raise not_found("USER_NOT_FOUND", f"user {trade.user_id} not found", user_id=trade.user_id)
        permissions, key_brokers = view
        decision = await self._controls.denial(trade.user_id) or check_trade(permissions, trade)
        _log_decision("trade checked", trade, decision)
        return permission_pb2.CheckTradeResponse(**_decision_fields(decision, key_brokers))

    @unary
    async def ReserveTrade(
        self, request: permission_pb2.ReserveTradeRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.ReserveTradeResponse:
        trade = trade_request_from_pb(request)
        if not trade.signal_id:
            raise invalid("BAD_SIGNAL_ID", "signal_id is required to reserve", field="signal_id")
        # One trip to the store: an unknown user is its UnknownUser, NOT_FOUND through _guard.
        reservation = await _guard(self._store.reserve(trade))
        _log_decision("trade reserved" if reservation.decision.allowed else "trade denied", trade, reservation.decision)
        return permission_pb2.ReserveTradeResponse(
            **_decision_fields(reservation.decision, reservation.api_key_brokers), replayed=reservation.replayed
        )

    @unary
    async def ReleaseReservation(
        self, request: permission_pb2.ReleaseReservationRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.ReleaseReservationResponse:
        user_id, signal_id = _ids(request.user_id, request.signal_id)
        return permission_pb2.ReleaseReservationResponse(released=await _guard(self._store.release(user_id, signal_id)))

    @unary
    async def ApplyExecution(
        self, request: permission_pb2.ApplyExecutionRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.ApplyExecutionResponse:
        event = execution_event_from_pb(request)
        applied = await _guard(self._store.apply_execution(event))
        return permission_pb2.ApplyExecutionResponse(new_fills=applied.new_fills)

    @unary
    async def ApplyExecutions(
        self, request: permission_pb2.ApplyExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.ApplyExecutionsResponse:
        # Every element is checked before anything is written: a refused one refuses the batch.
        events = execution_events_from_pb(request.executions)
        applied = await _guard(self._store.apply_executions(events))
        return permission_pb2.ApplyExecutionsResponse(new_fills=sum(a.new_fills for a in applied))

    @unary
    async def GetUserPermissions(
        self, request: permission_pb2.GetUserPermissionsRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.GetUserPermissionsResponse:
        permissions = await _user(self._store, _user_id(request.user_id))
        return permission_pb2.GetUserPermissionsResponse(permissions=permissions_to_pb(permissions))

    @unary
    async def GetPositions(
        self, request: permission_pb2.GetPositionsRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.GetPositionsResponse:
        user_id = _user_id(request.user_id)
        await _user(self._store, user_id)
        # One read: positions and today's figures from the same snapshot, never a fill half-seen.
        exposure = await _guard(self._store.exposure(user_id))
        positions = [exposure.positions[pair] for pair in sorted(exposure.positions)]
        today = permission_pb2.DailyUsage(
            day=self._store.today(),
            traded_usd=fmt(exposure.traded_today_usd),
            realized_pnl=fmt(exposure.realized_today),
            fees=fmt(exposure.fees_today),
            reserved_usd=fmt(exposure.open_remaining_usd()),
            open_reservations=exposure.open_count,
        )
        return permission_pb2.GetPositionsResponse(positions=[position_to_pb(p) for p in positions], today=today)

    @unary
    async def Authenticate(
        self, request: permission_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.AuthenticateResponse:
        principal = await self._tokens.principal(request.token)
        if principal is None:
            return permission_pb2.AuthenticateResponse(authenticated=False)
        return permission_pb2.AuthenticateResponse(
            authenticated=True,
            principal=permission_pb2.Principal(
                kind=KIND_TO_PB[principal.kind], subject=principal.subject, subscribers=sorted(principal.subscribers)
            ),
        )

    @unary
    async def GetCredentials(
        self, request: permission_pb2.GetCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.GetCredentialsResponse:
        user_id, broker = _user_id(request.user_id), _broker(request.broker)
        caller = current_principal()
        if caller is None or caller.kind is not PrincipalKind.SERVICE or caller.subject != f"executor-{broker}":
            raise logged_refusal(
                "/nija.permission.v1.PermissionService/GetCredentials", caller, grpc.StatusCode.PERMISSION_DENIED,
                "KEYS_FOR_OWN_BROKER_ONLY", f"only the {broker} executor may read {broker} API keys",
                user_id=user_id, broker=broker,
            )
        credentials = await self._accounts.credentials(user_id, broker)
        if credentials is None:
            raise not_found("NO_API_KEYS", f"no {broker} API keys stored for user {user_id}", user_id=user_id)
        return permission_pb2.GetCredentialsResponse(
            credentials=permission_pb2.ApiCredentials(
                api_key=credentials.api_key, api_secret=credentials.api_secret, passphrase=credentials.passphrase
            )
        )

    @unary
    async def ListSubscriptions(
        self, request: permission_pb2.ListSubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.ListSubscriptionsResponse:
        strategy_id = _id(request.strategy_id, "strategy_id") if request.strategy_id else None
        user_id = _user_id(request.user_id) if request.user_id else None
        rows = await _guard(self._store.list_subscriptions(strategy_id, user_id))
        return permission_pb2.ListSubscriptionsResponse(subscriptions=[subscription_to_pb(*row) for row in rows])

    @stream
    async def WatchControls(
        self, request: permission_pb2.WatchControlsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[permission_pb2.WatchControlsResponse]:
        async for switches, api_keys_version in self._controls.watch():
            yield controls_to_pb(switches, api_keys_version)


class AdminServicer(_Owner, permission_pb2_grpc.AdminServiceServicer):
    @unary
    async def PutUser(
        self, request: permission_pb2.PutUserRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.PutUserResponse:
        user = permissions_from_pb(request.user)
        await _guard(self._store.upsert(user))
        _audit("user put", user_id=user.user_id)
        return permission_pb2.PutUserResponse(user=permissions_to_pb(await _user(self._store, user.user_id)))

    @unary
    async def ListUsers(
        self, request: permission_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.ListUsersResponse:
        users = await _guard(self._store.list_users())
        return permission_pb2.ListUsersResponse(users=[permissions_to_pb(u) for u in users])

    @unary
    async def SetUserEnabled(
        self, request: permission_pb2.SetUserEnabledRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.SetUserEnabledResponse:
        user_id = _user_id(request.user_id)
        await _user(self._store, user_id)
        await _guard(self._store.set_enabled(user_id, request.enabled))
        _audit("user enabled" if request.enabled else "user disabled", user_id=user_id)
        return permission_pb2.SetUserEnabledResponse(user=permissions_to_pb(await _user(self._store, user_id)))

    @unary
    async def SetLimits(
        self, request: permission_pb2.SetLimitsRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.SetLimitsResponse:
        user_id = _user_id(request.user_id)
        current = await _user(self._store, user_id)
        limits = limits_from_pb(request.limits, current.limits)
        max_order = current.max_order_size_usd
        if request.max_order_size_usd:
            max_order = _positive(request.max_order_size_usd, "max_order_size_usd")
        try:
            updated = UserPermissions(
                user_id=current.user_id, enabled=current.enabled, allowed_brokers=current.allowed_brokers,
                allowed_pairs=current.allowed_pairs, max_order_size_usd=max_order,
                preferences=current.preferences, limits=limits,
            )
        except BadPermissions as exc:
            raise invalid("BAD_LIMITS", str(exc)) from None
        await _guard(self._store.upsert(updated))
        _audit("limits set", user_id=user_id)
        return permission_pb2.SetLimitsResponse(user=permissions_to_pb(await _user(self._store, user_id)))

    @unary
    async def SetKillSwitch(
        self, request: permission_pb2.SetKillSwitchRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.SetKillSwitchResponse:
        user_id = _user_id(request.user_id) if request.user_id else None
        if user_id is not None:
            await _user(self._store, user_id)
        reason = request.reason.strip()[:200] or "no reason given"
        switches = await self._controls.set(user_id, request.on, reason)
        _audit("kill switch " + ("on" if request.on else "off"), user_id=user_id or "*", reason=reason)
        return permission_pb2.SetKillSwitchResponse(controls=controls_to_pb(switches))

    @unary
    async def CreateToken(
        self, request: permission_pb2.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.CreateTokenResponse:
        kind = KIND_FROM_PB.get(request.kind)
        if kind is None:
            raise invalid("BAD_KIND", "kind must be USER, STRATEGY, ADMIN or SERVICE", field="kind")
        subject = _id(request.subject, "subject")
        if kind is PrincipalKind.USER:
            await _user(self._store, subject)
        token, record = await self._tokens.create(kind, subject, request.description[:200])
        _audit("token created", token_id=record.token_id, kind=kind.value, subject=subject)
        return permission_pb2.CreateTokenResponse(token=token, info=token_info_pb(record))

    @unary
    async def ListTokens(
        self, request: permission_pb2.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.ListTokensResponse:
        subject = _id(request.subject, "subject") if request.subject else None
        records = await _guard(self._store.list_tokens(subject))
        return permission_pb2.ListTokensResponse(tokens=[token_info_pb(r) for r in records])

    @unary
    async def RevokeToken(
        self, request: permission_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.RevokeTokenResponse:
        token_id = _id(request.token_id, "token_id")
        revoked = await self._tokens.revoke(token_id)
        if not revoked:
            raise not_found("TOKEN_NOT_FOUND", f"no valid token {token_id}", token_id=token_id)
        _audit("token revoked", token_id=token_id)
        return permission_pb2.RevokeTokenResponse(revoked=True)

    @unary
    async def SetApiKeys(
        self, request: permission_pb2.SetApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.SetApiKeysResponse:
        user_id, broker = _user_id(request.user_id), _broker(request.broker)
        await _user(self._store, user_id)
        pb = request.credentials
        for name in ("api_key", "api_secret"):
            if not getattr(pb, name).strip():
                raise invalid("MISSING_" + name.upper(), f"credentials.{name} is required", field=f"credentials.{name}")
        for name in ("api_key", "api_secret", "passphrase"):
            if len(getattr(pb, name)) > MAX_CREDENTIAL_CHARS:
                raise invalid("CREDENTIAL_TOO_LONG", f"credentials.{name} is longer than {MAX_CREDENTIAL_CHARS}",
                              field=f"credentials.{name}")
        info = await self._accounts.set_credentials(user_id, broker, pb.api_key, pb.api_secret, pb.passphrase)
        self._controls.changed()  # executors drop the credentials they hold
        _audit("api keys set", user_id=user_id, broker=broker)
        return permission_pb2.SetApiKeysResponse(info=api_key_info_pb(info))

    @unary
    async def ListApiKeys(
        self, request: permission_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.ListApiKeysResponse:
        user_id = _user_id(request.user_id)
        await _user(self._store, user_id)
        infos = await _guard(self._store.list_api_keys(user_id))
        return permission_pb2.ListApiKeysResponse(keys=[api_key_info_pb(i) for i in infos])

    @unary
    async def DeleteApiKeys(
        self, request: permission_pb2.DeleteApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.DeleteApiKeysResponse:
        user_id, broker = _user_id(request.user_id), _broker(request.broker)
        deleted = await _guard(self._store.delete_api_key(user_id, broker))
        self._controls.changed()  # executors drop the credentials they hold
        _audit("api keys deleted", user_id=user_id, broker=broker)
        return permission_pb2.DeleteApiKeysResponse(deleted=deleted)

    @unary
    async def RotateMasterKey(
        self, request: permission_pb2.RotateMasterKeyRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.RotateMasterKeyResponse:
        active, resealed = await self._accounts.rotate()
        self._controls.changed()  # executors drop the credentials they hold
        _audit("master key rotated", active_key_id=active, resealed=str(resealed))
        return permission_pb2.RotateMasterKeyResponse(active_key_id=active, resealed=resealed)

    @unary
    async def SetSubscription(
        self, request: permission_pb2.SetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.SetSubscriptionResponse:
        strategy_id, user_id = _id(request.strategy_id, "strategy_id"), _user_id(request.user_id)
        # Checked whole before anything is looked up or written (meaningful only when subscribing,
        # but a malformed one is refused either way rather than silently dropped).
        try:
            allocation = allocation_from_pb(request.allocation if request.HasField("allocation") else None)
        except AllocationProblem as problem:
            field = f"allocation.{pb_path(problem.field)}"
            raise invalid(f"BAD_{problem.field.upper()}", str(problem), field=field) from None
        await _user(self._store, user_id)
        await _guard(self._store.set_subscription(strategy_id, user_id, request.subscribed, allocation))
        if request.subscribed:
            _audit("subscribed", strategy_id=strategy_id, user_id=user_id, rule=allocation.rule.value,
                   allocation=describe(allocation))
        else:
            _audit("unsubscribed", strategy_id=strategy_id, user_id=user_id)
        return permission_pb2.SetSubscriptionResponse()


# ---- helpers -------------------------------------------------------------------------------------


async def _guard(awaitable):  # type: ignore[no-untyped-def]
    """The store's refusals as statuses: "not open yet" (the server accepts calls a moment before
    the app has opened its store) is UNAVAILABLE, an unknown user NOT_FOUND."""
    try:
        return await awaitable
    except StoreNotOpen:
        raise ServiceError(grpc.StatusCode.UNAVAILABLE, "NOT_READY", "permission store is not open") from None
    except UnknownUser as exc:
        raise not_found("USER_NOT_FOUND", f"user {exc.user_id} not found", user_id=exc.user_id) from None


async def _user(store: UserStore, user_id: str) -> UserPermissions:
    permissions = await _guard(store.get(user_id))
    if permissions is None:
        raise not_found("USER_NOT_FOUND", f"user {user_id} not found", user_id=user_id)
    return permissions


def _audit(what: str, **fields: str) -> None:
    """Administrative changes, with who made them (never any secret)."""
    log.warning(what, extra={"audit": True, "principal": str(current_principal() or ""), **fields})


def _log_decision(what: str, trade: TradeRequest, decision: Decision) -> None:
    """Denials at INFO, with their reason; allowed trades at DEBUG only: each allowed trade is an
    order in the ledger (the aggregator's), which is their audit, and formatting a JSON line per
    trade was a measurable part of the permission service's CPU per trade."""
    level = logging.DEBUG if decision.allowed else logging.INFO
    if not log.isEnabledFor(level):
        return
    log.log(level, what, extra={
        "user_id": trade.user_id, "signal_id": trade.signal_id, "allowed": decision.allowed,
        "denial": decision.code.value if decision.code else "", "reason": decision.reason,
    })


def _id(value: str, field: str) -> str:
    try:
        return check_id(value, field)
    except SignalProblem as problem:
        raise field_error(problem) from None


def _user_id(value: str) -> str:
    return _id(value, "user_id")


def _ids(user_id: str, signal_id: str) -> tuple[str, str]:
    return _user_id(user_id), _id(signal_id, "signal_id")


def _broker(value: str) -> str:
    if value not in BROKERS:
        raise invalid("UNKNOWN_BROKER", f"broker must be one of {list(BROKERS)}, got {value[:40]!r}", field="broker")
    return value


def _positive(text: str, field: str) -> Decimal:
    try:
        return parse_positive(text, field)
    except BadDecimal as exc:
        raise invalid("BAD_" + field.upper(), str(exc), field=field) from None


def _optional_positive(text: str, field: str) -> Decimal | None:
    return _positive(text, field) if text else None


def _decision_fields(decision: Decision, api_key_brokers: tuple[str, ...] = ()) -> dict[str, object]:
    fields: dict[str, object] = {
        "allowed": decision.allowed,
        "reason": decision.reason,
        "denial_code": DENIAL_TO_PB[decision.code] if decision.code else permission_pb2.DENIAL_CODE_UNSPECIFIED,
        "allowed_brokers": decision.brokers,
    }
    if decision.allowed:
        # Present (possibly empty) on every allowed response; absent on a denial.
        fields["preferences"] = preferences_to_pb(decision.preferences)
        fields["api_key_brokers"] = api_key_brokers
    return fields


def trade_request_from_pb(pb: permission_pb2.CheckTradeRequest | permission_pb2.ReserveTradeRequest) -> TradeRequest:
    """Every malformed field is INVALID_ARGUMENT naming it (BAD_USER_ID, BAD_PAIR, ...)."""
    try:
        user_id = check_id(pb.user_id, "user_id")
        pair = check_pair(pb.pair)
        side = side_from_pb(pb.side)
        size = check_size(pb.size_usd)
        # Optional for a check (it only ties the check to a signal in the logs).
        signal_id = check_id(pb.signal_id, "signal_id") if pb.signal_id else ""
    except SignalProblem as problem:
        raise field_error(problem) from None
    return TradeRequest(user_id=user_id, pair=pair, side=side, size_usd=size, signal_id=signal_id)


def execution_events_from_pb(executions: Sequence[permission_pb2.ApplyExecutionRequest]) -> list[ExecutionEvent]:
    """A batch for ApplyExecutions: 1 to MAX_EXECUTIONS updates, each checked like ApplyExecution's.
    The first malformed one refuses the whole batch with its own status and reason, its index in
    the message and in the ErrorInfo metadata (`index`), so the caller knows which to set aside."""
    if not executions:
        raise invalid("EMPTY_BATCH", "executions must hold at least one update", field="executions")
    if len(executions) > MAX_EXECUTIONS:
        raise invalid(
            "BATCH_TOO_LARGE", f"at most {MAX_EXECUTIONS} executions per call, got {len(executions)}",
            field="executions",
        )
    events = []
    for index, pb in enumerate(executions):
        try:
            events.append(execution_event_from_pb(pb))
        except ServiceError as err:
            raise ServiceError(
                err.code, err.reason, f"executions[{index}]: {err.message}", **err.metadata, index=str(index)
            ) from None
    return events


def execution_event_from_pb(pb: permission_pb2.ApplyExecutionRequest) -> ExecutionEvent:
    """A ledger update as the position manager needs it. A split's child fills count against the
    parent's reservation; only the parent's own final state closes it."""
    update = pb.update
    try:
        user_id = check_id(update.user_id, "update.user_id")
        signal_id = check_id(update.signal_id, "update.signal_id")
        pair = check_pair(update.pair)
        side = side_from_pb(update.side)
        status = STATUS_FROM_PB.get(update.status)
        if status is None:
            raise invalid("BAD_STATUS", "update.status is not a known status", field="update.status")
        fills = []
        for fill in update.fills:
            fills.append(FillEvent(
                fill_key=f"{pb.broker or update.broker}:{_id(fill.venue_trade_id, 'fill.venue_trade_id')}",
                price=_positive(fill.price, "fill.price"),
                quantity=_positive(fill.quantity, "fill.quantity"),
                fee=_fee(fill.fee),
            ))
        parent = update.parent_signal_id
        return ExecutionEvent(
            user_id=user_id,
            reservation_id=parent or signal_id,
            pair=pair,
            side=side,
            fills=tuple(fills),
            terminal=status.terminal and not parent,
        )
    except SignalProblem as problem:
        raise field_error(problem) from None
    except BadFill as exc:  # e.g. a fee of NaN: refused for good, not an INTERNAL retried forever
        raise invalid("BAD_FILL", str(exc), field="update.fills") from None


def _fee(text: str) -> Decimal:
    """Optional (empty: none); may be negative (a rebate); a plain wire decimal like every other
    (Decimal() alone also takes "1_000", " 1", "1e400" and 400-digit numbers, which then overflow
    the positions' exact arithmetic)."""
    try:
        return parse_decimal(text, "fill.fee") if text else Decimal(0)
    except BadDecimal as exc:
        raise invalid("BAD_FILL.FEE", str(exc), field="fill.fee") from None


def preferences_to_pb(preferences: RoutingPreferences) -> permission_pb2.RoutingPreferences:
    return permission_pb2.RoutingPreferences(
        preferred_brokers=preferences.preferred_brokers,
        blocked_brokers=preferences.blocked_brokers,
        routing_policy=POLICY_TO_PB[preferences.routing_policy],
        max_slippage_bps=preferences.max_slippage_bps,
    )


def limits_to_pb(limits: RiskLimits) -> permission_pb2.RiskLimits:
    return permission_pb2.RiskLimits(
        max_position_usd=fmt(limits.max_position_usd) if limits.max_position_usd is not None else "",
        max_open_positions=limits.max_open_positions or 0,
        max_daily_notional_usd=fmt(limits.max_daily_notional_usd) if limits.max_daily_notional_usd is not None else "",
        max_daily_loss_usd=fmt(limits.max_daily_loss_usd) if limits.max_daily_loss_usd is not None else "",
        trades_per_second=fmt(limits.trades_per_second),
        trade_burst=limits.trade_burst,
    )


def limits_from_pb(pb: permission_pb2.RiskLimits, current: RiskLimits | None = None) -> RiskLimits:
    """Empty (or 0 for counts) means no limit; an empty rate keeps the current one."""
    base = current or RiskLimits()
    try:
        return RiskLimits(
            max_position_usd=_optional_positive(pb.max_position_usd, "max_position_usd"),
            max_open_positions=pb.max_open_positions or None,
            max_daily_notional_usd=_optional_positive(pb.max_daily_notional_usd, "max_daily_notional_usd"),
            max_daily_loss_usd=_optional_positive(pb.max_daily_loss_usd, "max_daily_loss_usd"),
            trades_per_second=(
                _positive(pb.trades_per_second, "trades_per_second") if pb.trades_per_second else base.trades_per_second
            ),
            trade_burst=pb.trade_burst or base.trade_burst,
        )
    except BadPermissions as exc:
        raise invalid("BAD_LIMITS", str(exc)) from None


def permissions_to_pb(permissions: UserPermissions) -> permission_pb2.UserPermissions:
    return permission_pb2.UserPermissions(
        user_id=permissions.user_id,
        enabled=permissions.enabled,
        allowed_brokers=permissions.allowed_brokers,
        allowed_pairs=permissions.allowed_pairs,
        max_order_size_usd=fmt(permissions.max_order_size_usd),
        preferences=preferences_to_pb(permissions.preferences),
        limits=limits_to_pb(permissions.limits),
    )


def permissions_from_pb(pb: permission_pb2.UserPermissions) -> UserPermissions:
    prefs = pb.preferences
    if prefs.routing_policy not in POLICY_FROM_PB:
        raise invalid("BAD_ROUTING_POLICY", "preferences.routing_policy must be SCORE or COST",
                      field="preferences.routing_policy")
    try:
        return UserPermissions(
            user_id=_user_id(pb.user_id),
            enabled=pb.enabled,
            allowed_brokers=tuple(pb.allowed_brokers),
            allowed_pairs=tuple(pb.allowed_pairs),
            max_order_size_usd=_positive(pb.max_order_size_usd, "max_order_size_usd"),
            preferences=RoutingPreferences(
                preferred_brokers=tuple(prefs.preferred_brokers),
                blocked_brokers=tuple(prefs.blocked_brokers),
                routing_policy=POLICY_FROM_PB[prefs.routing_policy],
                max_slippage_bps=prefs.max_slippage_bps,
            ),
            limits=limits_from_pb(pb.limits),
        )
    except BadPermissions as exc:
        raise invalid("BAD_PERMISSIONS", str(exc)) from None


def position_to_pb(position: Position) -> permission_pb2.Position:
    return permission_pb2.Position(
        pair=position.pair,
        quantity=fmt(position.quantity),
        average_entry_price=fmt(position.average_entry_price),
        cost_basis=fmt(position.cost_basis),
        realized_pnl=fmt(position.realized_pnl),
        fees=fmt(position.fees),
    )


def controls_to_pb(switches, api_keys_version: str = "") -> permission_pb2.WatchControlsResponse:  # type: ignore[no-untyped-def]
    return permission_pb2.WatchControlsResponse(
        global_kill=switches.global_on,
        global_reason=switches.global_reason,
        users=[permission_pb2.UserKillSwitch(user_id=u, reason=r) for u, r in sorted(switches.users.items())],
        api_keys_version=api_keys_version,
    )


def _ts(value: datetime | str | None) -> timestamp_pb2.Timestamp | None:
    if value is None or value == "":
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime.fromisoformat(value) if isinstance(value, str) else value)
    return ts


def token_info_pb(record) -> permission_pb2.TokenInfo:  # type: ignore[no-untyped-def]
    info = permission_pb2.TokenInfo(
        token_id=record.token_id, kind=KIND_TO_PB[PrincipalKind(record.kind)],
        subject=record.subject, description=record.description,
    )
    created, revoked = _ts(record.created_at), _ts(record.revoked_at)
    if created is not None:
        info.created_at.CopyFrom(created)
    if revoked is not None:
        info.revoked_at.CopyFrom(revoked)
    return info


def api_key_info_pb(info) -> permission_pb2.ApiKeyInfo:  # type: ignore[no-untyped-def]
    pb = permission_pb2.ApiKeyInfo(user_id=info.user_id, broker=info.broker, master_key_id=info.key_id)
    updated = _ts(info.updated_at)
    if updated is not None:
        pb.updated_at.CopyFrom(updated)
    return pb

