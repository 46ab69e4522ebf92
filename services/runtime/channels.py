"""Outbound calls: one long-lived channel per upstream, a deadline on every call."""

from __future__ import annotations

import asyncio

import grpc

from services.runtime import tracing
from services.runtime.config import ConfigError
from services.runtime.security import Security, channel_credentials, target_is_local

#: Our clients ping every server this often while they have calls open. Servers accept pings down
#: to a third of it (`limits.ServerLimits.min_ping_interval_ms`), so ours are never cut off.
KEEPALIVE_TIME_MS = 30_000

CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    # Keep pinging on a stream that is quiet for hours (WatchControls: kill switches): gRPC's
    # default stops after 2 pings without data, so a dead peer on such a stream went unnoticed.
    ("grpc.http2.max_pings_without_data", 0),
    # Order placement must never be retried by the transport; retries are decided by the code.
    ("grpc.enable_retries", 0),
    # A restarted upstream is found again within a second, not after minutes of backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def open_channel(target: str, security: Security | None = None) -> grpc.aio.Channel:
    """A channel to `target`: TLS (and our client certificate for mTLS) when `security` has a
    certificate or a CA, and our bearer token on every call when it has one.

    Without `security` the channel is plaintext with no token, as before security existed.
    With it, plaintext to another machine is refused unless explicitly allowed: our token would
    cross the network in the clear.
    """
    # The trace context rides on every call when tracing is on.
    interceptors = tracing.client_interceptors() or None
    if security is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)
    credentials = channel_credentials(security)
    if credentials is not None:
        channel = grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors)
    elif not security.allow_plaintext_remote and not target_is_local(target):
        raise ConfigError(
            f"plaintext channel to non-loopback {target}: configure TLS (NIJA_TLS_CA) "
            "or set NIJA_ALLOW_PLAINTEXT_REMOTE=true"
        )
    else:
        channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)
    return _BearerChannel(channel, security.token) if security.token else channel


class _BearerChannel:
    """A channel that sends `authorization: Bearer <token>` on every call unless the caller set
    an `authorization` of its own.

    The header is added to each call's metadata rather than by a client interceptor: grpc.aio
    runs every intercepted call through an extra task, a cost paid on every hop of every trade.
    Not call credentials either: gRPC refuses those on plaintext channels, and loopback channels
    are plaintext.
    """

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self._channel = channel
        self._header = ("authorization", f"Bearer {token}")

    def __getattr__(self, name: str):  # close, channel_ready, get_state, ...
        return getattr(self._channel, name)

    async def __aenter__(self) -> _BearerChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close()

    def unary_unary(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return _WithBearer(self._channel.unary_unary(*args, **kwargs), self._header)

    def unary_stream(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return _WithBearer(self._channel.unary_stream(*args, **kwargs), self._header)

    def stream_unary(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return _WithBearer(self._channel.stream_unary(*args, **kwargs), self._header)

    def stream_stream(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return _WithBearer(self._channel.stream_stream(*args, **kwargs), self._header)


class _WithBearer:
    __slots__ = ("_callable", "_header")

    def __init__(self, multicallable, header: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
        self._callable = multicallable
        self._header = header

    def __call__(self, request=None, *, metadata=None, **kwargs):  # type: ignore[no-untyped-def]
        if metadata is None:
            metadata = (self._header,)
        elif not any(key == "authorization" for key, _ in metadata):
            metadata = (*tuple(metadata), self._header)
        return self._callable(request, metadata=metadata, **kwargs)


def bounded(default_s: float, remaining_s: float | None) -> float:
    """Seconds for an outbound call: our default, cut to what our own caller has left."""
    if remaining_s is None:
        return default_s
    return max(0.001, min(default_s, remaining_s))


def raise_if_cancelled() -> None:
    """For a loop that retries failed streams: grpc reports the task's own cancellation as a
    CANCELLED call, which must end the loop, not be retried (a task that swallows its cancel
    hangs whoever stops it)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
