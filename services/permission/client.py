"""The permission service as the other services call it: one channel, a deadline on every call.

Used by the router (check, reserve, release, a strategy's subscriptions), the aggregator (apply
executions), executors (credentials, kill switches) and every service's authenticator (tokens ->
principals).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import grpc
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc

from services.domain.money import fmt
from services.domain.signal import Signal
from services.permission.allocations import Subscription, subscription_from_pb
from services.runtime.auth import CachingAuthenticator, Principal, PrincipalKind
from services.runtime.channels import bounded, open_channel, raise_if_cancelled
from services.runtime.errors import relay
from services.runtime.security import Security
from services.runtime.wire import SIDE_TO_PB

log = logging.getLogger(__name__)

KIND_FROM_PB = {
    permission_pb2.PRINCIPAL_KIND_USER: PrincipalKind.USER,
    permission_pb2.PRINCIPAL_KIND_STRATEGY: PrincipalKind.STRATEGY,
    permission_pb2.PRINCIPAL_KIND_ADMIN: PrincipalKind.ADMIN,
    permission_pb2.PRINCIPAL_KIND_SERVICE: PrincipalKind.SERVICE,
}
KIND_TO_PB = {v: k for k, v in KIND_FROM_PB.items()}


class PermissionClient:
    def __init__(
        self, target: str, security: Security | None = None, timeout_s: float = 2.0, reserve_timeout_s: float | None = None
    ) -> None:
        self._channel = open_channel(target, security)
        self._stub = permission_pb2_grpc.PermissionServiceStub(self._channel)
        self._timeout_s = timeout_s
        # Reservations of one user go one at a time: a burst queues, and the caller's own
        # deadline (when shorter) is what bounds the wait.
        self._reserve_timeout_s = reserve_timeout_s or timeout_s

    async def close(self) -> None:
        await self._channel.close()

    async def check(self, signal: Signal, time_remaining: float | None = None) -> permission_pb2.CheckTradeResponse:
        request = permission_pb2.CheckTradeRequest(
            user_id=signal.user_id, pair=signal.pair, side=SIDE_TO_PB[signal.side],
            size_usd=fmt(signal.size_usd), signal_id=signal.signal_id,
        )
        return await self._call(self._stub.CheckTrade, request, time_remaining)

    async def reserve(self, signal: Signal, time_remaining: float | None = None) -> permission_pb2.ReserveTradeResponse:
        request = permission_pb2.ReserveTradeRequest(
            user_id=signal.user_id, pair=signal.pair, side=SIDE_TO_PB[signal.side],
            size_usd=fmt(signal.size_usd), signal_id=signal.signal_id,
        )
        return await self._call(self._stub.ReserveTrade, request, time_remaining, self._reserve_timeout_s)

    async def release(self, user_id: str, signal_id: str, time_remaining: float | None = None) -> bool:
        request = permission_pb2.ReleaseReservationRequest(user_id=user_id, signal_id=signal_id)
        response = await self._call(self._stub.ReleaseReservation, request, time_remaining)
        return response.released

    async def apply_execution(self, update: common_pb2.ExecutionUpdate, time_remaining: float | None = None) -> int:
        request = permission_pb2.ApplyExecutionRequest(update=update, broker=update.broker)
        response = await self._call(self._stub.ApplyExecution, request, time_remaining)
        return response.new_fills

    async def apply_executions(
        self, updates: Sequence[common_pb2.ExecutionUpdate], time_remaining: float | None = None
    ) -> int:
        """The updates in one call, applied in order in one transaction (all or nothing): the fills
        applied now. A refused update refuses them all; its index is in the error's message."""
        request = permission_pb2.ApplyExecutionsRequest(
            executions=[permission_pb2.ApplyExecutionRequest(update=u, broker=u.broker) for u in updates]
        )
        response = await self._call(self._stub.ApplyExecutions, request, time_remaining)
        return response.new_fills

    async def subscriptions(self, strategy_id: str, time_remaining: float | None = None) -> list[Subscription]:
        """Every subscriber of `strategy_id` with their allocation, by user id (empty: none)."""
        request = permission_pb2.ListSubscriptionsRequest(strategy_id=strategy_id)
        response = await self._call(self._stub.ListSubscriptions, request, time_remaining)
        return [subscription_from_pb(pb) for pb in response.subscriptions]

    async def credentials(self, user_id: str, broker: str) -> permission_pb2.ApiCredentials | None:
        """The user's decrypted keys for `broker` (executors only); None when none are stored."""
        try:
            response = await self._stub.GetCredentials(
                permission_pb2.GetCredentialsRequest(user_id=user_id, broker=broker), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise relay(exc) from None
        return response.credentials

    async def authenticate(self, token: str) -> Principal | None:
        try:
            response = await self._stub.Authenticate(
                permission_pb2.AuthenticateRequest(token=token), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise relay(exc) from None
        if not response.authenticated:
            return None
        pb = response.principal
        return Principal(KIND_FROM_PB[pb.kind], pb.subject, frozenset(pb.subscribers))

    def authenticator(self, ttl_s: float = 2.0) -> CachingAuthenticator:
        """Tokens checked by the permission service, cached briefly (revocation takes effect
        within `ttl_s`)."""
        return CachingAuthenticator(self.authenticate, ttl_s=ttl_s)

    async def watch_controls(self) -> AsyncIterator[permission_pb2.WatchControlsResponse]:
        """The kill switches now and on every change, for as long as the service runs: the
        stream is opened again (after a short pause) whenever it breaks."""
        while True:
            try:
                async for response in self._stub.WatchControls(permission_pb2.WatchControlsRequest()):
                    yield response
            except grpc.aio.AioRpcError as exc:
                raise_if_cancelled()
                log.warning("controls stream broke; reconnecting", extra={"code": exc.code().name})
            await asyncio.sleep(0.5)

    async def _call(self, method, request, time_remaining, timeout_s=None):  # type: ignore[no-untyped-def]
        try:
            return await method(request, timeout=bounded(timeout_s or self._timeout_s, time_remaining))
        except grpc.aio.AioRpcError as exc:
            raise relay(exc) from None
