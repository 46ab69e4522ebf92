"""What one caller may cost a server: message sizes, pings, streams per connection and per principal.

A server keeps serving everyone else when one client opens thousands of idle streams, never reads,
sends oversized messages, pings abusively fast or sends hundreds of calls at once. The transport
limits are gRPC core's own (`ServerLimits.grpc_options`); the per-principal limits (open response
streams, unary calls running) are `PrincipalLimiter`'s, an interceptor that runs after the app's
`AuthInterceptor`, when the caller is known.

Not set, on purpose: `grpc.max_connection_idle_ms` and `grpc.max_connection_age_ms`. The GOAWAY
they send races with calls the client is starting; our channels have transport retries off (an
order must never be re-sent by the transport), so such a call fails UNAVAILABLE (seen about 1 in
200 calls around the idle deadline). The mesh's watch streams also live for days, so an age limit
would only churn them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.runtime.auth import EXEMPT_PREFIXES, Principal, PrincipalKind, current_principal, security_log
from services.runtime.channels import KEEPALIVE_TIME_MS
from services.runtime.config import ConfigError
from services.runtime.errors import ServiceError, to_status
from services.runtime.handlers import Behaviour, rewrap

#: The mesh's own callers, and operators: never limited per principal. A router holds an Execute
#: stream per order in flight to each executor, and the bench drives load with the admin token.
UNLIMITED_KINDS = frozenset({PrincipalKind.SERVICE, PrincipalKind.ADMIN})


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    #: Largest message a server takes or sends. Sending is capped at what our clients accept
    #: (gRPC's 4 MiB default): a bigger response fails here instead of after it was sent.
    max_message_bytes: int = 4 * 1024 * 1024
    #: Concurrent streams on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a client
    #: past it waits for a free stream, nothing fails. Twice the busiest connection the mesh
    #: opens: the bench's burst, 1,000 SubmitSignal streams at once on one channel.
    max_streams_per_connection: int = 2000
    #: A client ping sooner than this after the last one, with no data sent in between, is a
    #: strike; after `max_ping_strikes` strikes the connection is closed (GOAWAY too_many_pings).
    #: A third of our clients' keepalive interval, so timer jitter never strikes one of them.
    min_ping_interval_ms: int = KEEPALIVE_TIME_MS // 3
    max_ping_strikes: int = 2
    #: The server pings its clients too: a client that vanished without closing its connection
    #: (host down, cable cut) gives back its streams, and its principal's slots, within
    #: keepalive_time + keepalive_timeout instead of gRPC's default two hours.
    keepalive_time_ms: int = 60_000
    keepalive_timeout_ms: int = 20_000
    #: Response streams (SubmitSignal, SubmitSignals, WatchUpdates, ...) one user or strategy may
    #: hold open on one server. Sized for a desk's strategy that follows each of its subscribed
    #: users on a WatchUpdates stream of its own (a desk of up to ~200 accounts), with headroom;
    #: a user needs one watch stream plus one per order it is following.
    max_streams_per_principal: int = 256
    #: Unary calls of one user or strategy running at once on one server; more wait their turn
    #: (never refused). One principal's burst then queues behind itself instead of ahead of
    #: everyone else: a server has one event loop and one database thread, both first come, first
    #: served. Above what one client's honest concurrency gains on one process.
    max_calls_per_principal: int = 16

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "max_ping_strikes" and value < 1:
                raise ConfigError(f"{field.name} must be at least 1, got {value}")
        if self.max_ping_strikes < 0:  # 0 would let a client ping without limit
            raise ConfigError(f"max_ping_strikes must be at least 0, got {self.max_ping_strikes}")
        if self.min_ping_interval_ms > KEEPALIVE_TIME_MS:
            raise ConfigError(
                f"min_ping_interval_ms {self.min_ping_interval_ms} is above our clients' keepalive "
                f"interval {KEEPALIVE_TIME_MS}: every one of them would be cut off as abusive"
            )

    def grpc_options(self) -> tuple[tuple[str, int], ...]:
        return (
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
            ("grpc.http2.min_ping_interval_without_data_ms", self.min_ping_interval_ms),
            ("grpc.http2.max_ping_strikes", self.max_ping_strikes),
            # Our clients ping only with calls open, others may not: an idle connection's pings
            # are held to the same interval instead of gRPC's default two hours.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
        )


Key = tuple[PrincipalKind, str]


@dataclasses.dataclass
class _Key:
    semaphore: asyncio.Semaphore
    present: int = 0  # holding or waiting
    holding: int = 0


class Turns:
    """At most `limit` holders at once per key; the others wait, first come, first served. A key's
    state lives only while someone holds or waits (a server sees many users, each now and then)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._keys: dict[Key, _Key] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def holding(self, key: Key) -> int:
        entry = self._keys.get(key)
        return 0 if entry is None else entry.holding

    def waiting(self, key: Key) -> int:
        entry = self._keys.get(key)
        return 0 if entry is None else entry.present - entry.holding

    @contextlib.asynccontextmanager
    async def turn(self, key: Key) -> AsyncIterator[None]:
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = _Key(asyncio.Semaphore(self._limit))
        entry.present += 1
        try:
            async with entry.semaphore:
                entry.holding += 1
                try:
                    yield
                finally:
                    entry.holding -= 1
        finally:
            entry.present -= 1
            if entry.present == 0:
                del self._keys[key]


class PrincipalLimiter(grpc.aio.ServerInterceptor):
    """What one user or strategy may hold on this server.

    - At most `max_streams` open response streams; one more is refused
      RESOURCE_EXHAUSTED/TOO_MANY_STREAMS (a security event) before its handler runs. A slot is
      given back when the call ends, however it ends (context done callback: a stream abandoned
      mid-write by a client that went away is released as well).
    - At most `max_calls` unary calls running; the rest wait their turn (`Turns`).

    Must come after the AuthInterceptor: the checks run inside the handler it wraps, where the
    caller's principal is set. Calls without a principal (health, reflection, servers without
    authentication) and the kinds in UNLIMITED_KINDS are not counted.
    """

    def __init__(self, max_streams: int, max_calls: int) -> None:
        self._max = max_streams
        self._open: Counter[Key] = Counter()
        self.calls = Turns(max_calls)

    def open_streams(self, kind: PrincipalKind, subject: str) -> int:
        return self._open[(kind, subject)]

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        return rewrap(handler, unary_unary=self._take_turns, unary_stream=functools.partial(self._admitted, method),
                      stream_stream=functools.partial(self._admitted, method))

    def _take_turns(self, inner: Behaviour) -> Behaviour:
        turn = self.calls.turn

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = current_principal()
            if principal is None or principal.kind in UNLIMITED_KINDS:
                return await inner(request, context)
            async with turn((principal.kind, principal.subject)):
                return await inner(request, context)

        return unary_unary

    def _admitted(self, method: str, inner: Behaviour) -> Behaviour:
        """A response stream that holds one of its principal's slots (the project's streaming
        handlers are async generators: DESIGN, `async def ... yield`)."""
        admit = self._admit

        async def streaming(request_or_requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await admit(method, context)
            async for item in inner(request_or_requests, context):
                yield item

        return streaming

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> None:
        principal = current_principal()
        if principal is None or principal.kind in UNLIMITED_KINDS:
            return
        key = (principal.kind, principal.subject)
        refusal = self._refusal(method, principal, self._open[key])
        if refusal is not None:
            await context.abort_with_status(to_status(refusal))
        self._open[key] += 1
        context.add_done_callback(lambda _context: self._release(key))

    def _refusal(self, method: str, principal: Principal, open_now: int) -> ServiceError | None:
        if open_now < self._max:
            return None
        message = f"{principal} already holds {open_now} open streams on this server; close one first"
        security_log.warning(
            "rpc refused: %s", message,
            extra={"method": method, "principal": str(principal), "reason": "TOO_MANY_STREAMS"},
        )
        return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS", message,
                            limit=str(self._max))

    def _release(self, key: Key) -> None:
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
