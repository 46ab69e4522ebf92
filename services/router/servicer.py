"""RouterService: proto in -> engine -> proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.router.engine import RouterEngine
from services.runtime.errors import invalid, stream


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, engine: RouterEngine) -> None:
        self._engine = engine

    @stream
    async def SubmitSignal(
        self, request: router_pb2.SubmitSignalRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.SubmitSignalResponse]:
        if not request.HasField("signal"):
            raise invalid("MISSING_SIGNAL", "signal is required", field="signal")
        async for update in self._engine.submit(request.signal, context.time_remaining()):
            yield router_pb2.SubmitSignalResponse(update=update)
