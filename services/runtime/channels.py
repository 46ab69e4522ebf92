"""Outbound calls: one long-lived channel per upstream, a deadline on every call."""

from __future__ import annotations

import grpc

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


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def bounded(default_s: float, remaining_s: float | None) -> float:
    """Seconds for an outbound call: our default, cut to what our own caller has left."""
    if remaining_s is None:
        return default_s
    return max(0.001, min(default_s, remaining_s))
