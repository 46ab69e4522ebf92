"""Outbound calls: one long-lived channel per upstream, a deadline on every call."""

from __future__ import annotations

import asyncio

import grpc

from services.runtime import tracing
from services.runtime.auth import token_interceptors
from services.runtime.config import ConfigError
from services.runtime.security import Security, channel_credentials, target_is_local

CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
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
    traced = tracing.client_interceptors()
    if security is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=traced or None)
    interceptors = [*traced, *(token_interceptors(security.token) if security.token else ())] or None
    credentials = channel_credentials(security)
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors)
    if not security.allow_plaintext_remote and not target_is_local(target):
        raise ConfigError(
            f"plaintext channel to non-loopback {target}: configure TLS (NIJA_TLS_CA) "
            "or set NIJA_ALLOW_PLAINTEXT_REMOTE=true"
        )
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)


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
