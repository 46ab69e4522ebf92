"""gRPC adapter: proto in -> validated request -> store + check -> proto out."""

from __future__ import annotations

import logging

import grpc
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc

from services.domain.money import fmt
from services.domain.signal import SignalProblem, check_id, check_pair, check_size
from services.permission.checks import Decision, Denial, TradeRequest, check_trade
from services.permission.permissions import RoutingPolicy, RoutingPreferences, UserPermissions
from services.permission.store import StoreNotOpen, UserStore
from services.runtime.errors import ServiceError, not_found, unary
from services.runtime.wire import field_error, side_from_pb

log = logging.getLogger(__name__)

DENIAL_TO_PB = {
    Denial.USER_DISABLED: permission_pb2.DENIAL_CODE_USER_DISABLED,
    Denial.PAIR_NOT_ALLOWED: permission_pb2.DENIAL_CODE_PAIR_NOT_ALLOWED,
    Denial.SIZE_ABOVE_MAX: permission_pb2.DENIAL_CODE_SIZE_ABOVE_MAX,
    Denial.NO_ALLOWED_BROKER: permission_pb2.DENIAL_CODE_NO_ALLOWED_BROKER,
}

#: None (no preference) is UNSPECIFIED: the router applies its default.
POLICY_TO_PB = {
    None: common_pb2.ROUTING_POLICY_UNSPECIFIED,
    RoutingPolicy.SCORE: common_pb2.ROUTING_POLICY_SCORE,
    RoutingPolicy.COST: common_pb2.ROUTING_POLICY_COST,
}


class PermissionServicer(permission_pb2_grpc.PermissionServiceServicer):
    def __init__(self, store: UserStore) -> None:
        self._store = store

    @unary
    async def CheckTrade(
        self, request: permission_pb2.CheckTradeRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.CheckTradeResponse:
        trade = trade_request_from_pb(request)
        decision = check_trade(await self._permissions(trade.user_id), trade)
        log.info(
            "trade checked",
            extra={
                "user_id": trade.user_id,
                "signal_id": trade.signal_id,
                "allowed": decision.allowed,
                "denial": decision.code.value if decision.code else "",
            },
        )
        return decision_to_pb(decision)

    @unary
    async def GetUserPermissions(
        self, request: permission_pb2.GetUserPermissionsRequest, context: grpc.aio.ServicerContext
    ) -> permission_pb2.GetUserPermissionsResponse:
        try:
            user_id = check_id(request.user_id, "user_id")
        except SignalProblem as problem:
            raise field_error(problem) from None
        permissions = await self._permissions(user_id)
        return permission_pb2.GetUserPermissionsResponse(permissions=permissions_to_pb(permissions))

    async def _permissions(self, user_id: str) -> UserPermissions:
        try:
            permissions = await self._store.get(user_id)
        except StoreNotOpen:
            # The server accepts calls a moment before the app has opened its store.
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, "NOT_READY", "permission store is not open"
            ) from None
        if permissions is None:
            raise not_found("USER_NOT_FOUND", f"user {user_id} not found", user_id=user_id)
        return permissions


def trade_request_from_pb(pb: permission_pb2.CheckTradeRequest) -> TradeRequest:
    """Every malformed field is INVALID_ARGUMENT naming it (BAD_USER_ID, BAD_PAIR, ...)."""
    try:
        user_id = check_id(pb.user_id, "user_id")
        pair = check_pair(pb.pair)
        side = side_from_pb(pb.side)
        size = check_size(pb.size_usd)
        # Optional here: it only ties the check to a signal in the logs.
        signal_id = check_id(pb.signal_id, "signal_id") if pb.signal_id else ""
    except SignalProblem as problem:
        raise field_error(problem) from None
    return TradeRequest(user_id=user_id, pair=pair, side=side, size_usd=size, signal_id=signal_id)


def decision_to_pb(decision: Decision) -> permission_pb2.CheckTradeResponse:
    response = permission_pb2.CheckTradeResponse(
        allowed=decision.allowed,
        reason=decision.reason,
        denial_code=DENIAL_TO_PB[decision.code] if decision.code else permission_pb2.DENIAL_CODE_UNSPECIFIED,
        allowed_brokers=decision.brokers,
    )
    if decision.allowed:
        # Present (possibly empty) on every allowed response; absent on a denial.
        response.preferences.CopyFrom(preferences_to_pb(decision.preferences))
    return response


def preferences_to_pb(preferences: RoutingPreferences) -> permission_pb2.RoutingPreferences:
    return permission_pb2.RoutingPreferences(
        preferred_brokers=preferences.preferred_brokers,
        blocked_brokers=preferences.blocked_brokers,
        routing_policy=POLICY_TO_PB[preferences.routing_policy],
        max_slippage_bps=preferences.max_slippage_bps,
    )


def permissions_to_pb(permissions: UserPermissions) -> permission_pb2.UserPermissions:
    return permission_pb2.UserPermissions(
        user_id=permissions.user_id,
        enabled=permissions.enabled,
        allowed_brokers=permissions.allowed_brokers,
        allowed_pairs=permissions.allowed_pairs,
        max_order_size_usd=fmt(permissions.max_order_size_usd),
        preferences=preferences_to_pb(permissions.preferences),
    )
