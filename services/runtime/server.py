"""One bootstrap for every service.

`serve(app, listen)` runs a grpc.aio server with the standard async health service (overall ""
and each of the app's service names), server reflection, and a graceful stop: on SIGTERM/SIGINT
health turns NOT_SERVING, in-flight calls get `grace_s` to finish, then the app stops.
The bound port (useful with port 0) is written to `port_file` once the server is SERVING.

What one caller may cost the server (message sizes, pings, streams per connection and per
principal) comes from the app's optional `limits` (`services.runtime.limits.ServerLimits`).

Transport security comes from a `Security`: TLS (mTLS with a CA) when a certificate is set;
otherwise plaintext, which is refused on anything but loopback unless explicitly allowed. An app
that authenticates its callers exposes `interceptors` (e.g. an `AuthInterceptor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import signal
from collections.abc import Sequence
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime.config import ConfigError
from services.runtime.errors import ServiceError, to_status
from services.runtime import tracing
from services.runtime.handlers import rewrap
from services.runtime.limits import PrincipalLimiter, ServerLimits
from services.runtime.metrics import RPC_CALLS, MetricsServer
from services.runtime.security import Security, is_loopback, server_credentials

log = logging.getLogger(__name__)

SERVER_OPTIONS = (("grpc.so_reuseport", 0),)


def server_options(limits: ServerLimits) -> tuple[tuple[str, int], ...]:
    return (*SERVER_OPTIONS, *limits.grpc_options())


@dataclasses.dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 0
    port_file: str | None = None
    grace_s: float = 5.0
    #: `/metrics`, `/health`, `/ready` over HTTP on this port (0: any free one; None: not served).
    #: Its bound port is written to `<port_file>.metrics`.
    metrics_port: int | None = None


class App(Protocol):
    """What a service hands to the bootstrap."""

    #: fully-qualified gRPC service names served (health + reflection).
    service_names: Sequence[str]

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self, health: "Health") -> None: ...

    async def stop(self) -> None: ...


class Health:
    """The app's view of its health status: one switch for "" and all its service names."""

    def __init__(self, servicer: health.aio.HealthServicer, names: Sequence[str]) -> None:
        self._servicer = servicer
        self._names = ["", *names]
        self.serving = False
        # An app that sets its own status during start (e.g. NOT_SERVING until its upstream is
        # reachable) keeps it; otherwise the bootstrap turns it SERVING once started.
        self.managed_by_app = False

    async def set_serving(self, serving: bool) -> None:
        self.managed_by_app = True
        await self._apply(serving)

    async def _apply(self, serving: bool) -> None:
        self.serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._names:
            await self._servicer.set(name, status)


class _CountCalls(grpc.aio.ServerInterceptor):
    """nija_rpc_calls_total by method: what a trade costs in calls, per service (`nija bench`)."""

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = await continuation(details)
        RPC_CALLS.labels(details.method if handler is not None else "unknown").inc()
        return handler


class _Malformed:
    """What the guarded deserializer hands over for bytes that are no request message."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _RefuseMalformed(grpc.aio.ServerInterceptor):
    """Bytes that do not parse as the method's request are INVALID_ARGUMENT/MALFORMED_REQUEST.

    gRPC itself answers UNKNOWN ("Unexpected DecodeError") when a request deserializer raises, and
    a deserializer cannot choose the status. So the deserializer is wrapped to hand over a
    `_Malformed` instead, and the handler, wrapped outermost (this interceptor comes first), refuses
    the call before anything else (authentication included) sees the request."""

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        deserializer = handler.request_deserializer

        def deserialize(data: bytes) -> object:
            try:
                return deserializer(data)
            except Exception as exc:  # protobuf's DecodeError, or invalid UTF-8 in a string field
                return _Malformed(exc)

        return rewrap(handler, request_deserializer=deserialize, unary_unary=_unary_unary,
                      unary_stream=_unary_stream, stream_unary=_stream_unary, stream_stream=_stream_stream)


async def _refuse(context: grpc.aio.ServicerContext, request: _Malformed) -> None:
    await context.abort_with_status(to_status(ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST",
        f"the request is not a valid message for this method ({type(request.error).__name__})",
    )))


def _unary_unary(inner):  # type: ignore[no-untyped-def]
    async def call(request, context):  # type: ignore[no-untyped-def]
        if isinstance(request, _Malformed):
            await _refuse(context, request)
        return await inner(request, context)
    return call


def _unary_stream(inner):  # type: ignore[no-untyped-def]
    if not inspect.isasyncgenfunction(inner):  # writes with context.write (grpc's health Watch)
        return _unary_unary(inner)

    async def call(request, context):  # type: ignore[no-untyped-def]
        if isinstance(request, _Malformed):
            await _refuse(context, request)
        async for response in inner(request, context):
            yield response
    return call


class _MalformedInStream(Exception):
    """Raised to the handler reading a request stream that carried a malformed message."""


async def _checked(requests, found: list[_Malformed]):  # type: ignore[no-untyped-def]
    """The requests, ending at a malformed one, which is kept in `found` and raised.

    A request stream is often read by a task of the handler's own while the handler writes its
    responses; aborting the call from that task would race the handler's write. So the handler
    (wrapped below) refuses the call itself, in its own task, once it stops."""
    async for request in requests:
        if isinstance(request, _Malformed):
            found.append(request)
            raise _MalformedInStream
        yield request


def _stream_unary(inner):  # type: ignore[no-untyped-def]
    async def call(requests, context):  # type: ignore[no-untyped-def]
        found: list[_Malformed] = []
        try:
            response = await inner(_checked(requests, found), context)
        except Exception:
            if not found:
                raise
        if found:
            await _refuse(context, found[0])
        return response
    return call


def _stream_stream(inner):  # type: ignore[no-untyped-def]
    if not inspect.isasyncgenfunction(inner):
        return _stream_unary(inner)

    async def call(requests, context):  # type: ignore[no-untyped-def]
        found: list[_Malformed] = []
        try:
            async for response in inner(_checked(requests, found), context):
                yield response
        except Exception:
            if not found:
                raise
        if found:  # whether the handler raised our error, its own, or ended quietly
            await _refuse(context, found[0])
    return call


class RunningServer:
    """A started server; `port` is the bound port. Used directly by tests."""

    def __init__(self, app: App, listen: Listen, security: Security | None = None) -> None:
        self.app = app
        self.listen = listen
        self.security = security or Security()
        # Checked here, before anything binds: a misconfigured server must not start at all.
        self._credentials = server_credentials(self.security)
        if self._credentials is None and not is_loopback(listen.host) and not self.security.allow_plaintext_remote:
            raise ConfigError(
                f"plaintext listen on non-loopback {listen.host}: configure TLS (NIJA_TLS_CERT, "
                "NIJA_TLS_KEY) or set NIJA_ALLOW_PLAINTEXT_REMOTE=true"
            )
        # Optional `limits`: an app whose callers need other limits than the defaults.
        self.limits: ServerLimits = getattr(app, "limits", None) or ServerLimits()
        self.principal_limiter = PrincipalLimiter(self.limits.max_streams_per_principal, self.limits.max_calls_per_principal)
        # Malformed bytes refused before anything reads them; then counted; then tracing (a
        # refused call is still a span), then the app's own (its AuthInterceptor), then the
        # per-principal limits, which need the caller it found.
        interceptors = (
            _RefuseMalformed(),
            _CountCalls(),
            *tracing.server_interceptors(only_continued=getattr(app, "traces_only_continued", False)),
            *(getattr(app, "interceptors", None) or ()),
            self.principal_limiter,
        )
        self.server = grpc.aio.server(interceptors=interceptors, options=server_options(self.limits))
        self._health_servicer = health.aio.HealthServicer()
        self.health = Health(self._health_servicer, app.service_names)
        self.port = 0
        self.metrics: MetricsServer | None = None

    @property
    def target(self) -> str:
        return f"{self.listen.host}:{self.port}"

    async def start(self) -> "RunningServer":
        self.app.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health_servicer, self.server)
        reflection.enable_server_reflection(
            (*self.app.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = f"{self.listen.host}:{self.listen.port}"
        if self._credentials is not None:
            self.port = self.server.add_secure_port(address, self._credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        await self.health._apply(False)
        # The app is up before the first call can reach its handlers.
        await self.app.start(self.health)
        try:
            await self.server.start()
        except BaseException:
            await self.app.stop()
            raise
        if not self.health.managed_by_app:
            await self.health._apply(True)
        if self.listen.metrics_port is not None:
            self.metrics = await MetricsServer(
                self.listen.host, self.listen.metrics_port, lambda: self.health.serving
            ).start()
            if self.listen.port_file:
                write_atomically(f"{self.listen.port_file}.metrics", str(self.metrics.port))
        if self.listen.port_file:  # last: whoever waits for it finds the metrics port written too
            write_atomically(self.listen.port_file, str(self.port))
        log.info(
            "serving",
            extra={"port": self.port, "services": list(self.app.service_names),
                   "tls": self.security.tls, "mtls": self.security.mtls},
        )
        return self

    async def stop(self, grace_s: float | None = None) -> None:
        grace = self.listen.grace_s if grace_s is None else grace_s
        await self._health_servicer.enter_graceful_shutdown()
        self.health.serving = False
        log.info("draining", extra={"grace_s": grace})
        # Optional `async drain(grace_s)`: an app that winds work down while calls are still open.
        drain = getattr(self.app, "drain", None)
        # The app winds its work down while in-flight calls are still open, then the server
        # gives them the rest of the grace.
        await asyncio.gather(drain(grace) if drain else asyncio.sleep(0), self.server.stop(grace))
        await self.app.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        log.info("stopped")


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


async def serve(app: App, listen: Listen, security: Security | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await RunningServer(app, listen, security).start()
    try:
        await stop.wait()
    finally:
        await running.stop()
        if listen.port_file:
            with contextlib.suppress(FileNotFoundError):
                os.remove(listen.port_file)
