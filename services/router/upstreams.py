"""The permission service as the router calls it: one channel, a deadline on every call."""

from __future__ import annotations

import grpc
from nija.permission.v1 import permission_pb2, permission_pb2_grpc

from services.domain.money import fmt
from services.domain.signal import Signal
from services.runtime.channels import bounded, open_channel
from services.runtime.errors import relay
from services.runtime.wire import SIDE_TO_PB


class PermissionClient:
    def __init__(self, target: str, timeout_s: float = 2.0) -> None:
        self._channel = open_channel(target)
        self._stub = permission_pb2_grpc.PermissionServiceStub(self._channel)
        self._timeout_s = timeout_s

    async def close(self) -> None:
        await self._channel.close()

    async def check(self, signal: Signal, time_remaining: float | None = None) -> permission_pb2.CheckTradeResponse:
        try:
            return await self._stub.CheckTrade(
                permission_pb2.CheckTradeRequest(
                    user_id=signal.user_id,
                    pair=signal.pair,
                    side=SIDE_TO_PB[signal.side],
                    size_usd=fmt(signal.size_usd),
                    signal_id=signal.signal_id,
                ),
                timeout=bounded(self._timeout_s, time_remaining),
            )
        except grpc.aio.AioRpcError as exc:
            raise relay(exc) from None
