"""Prometheus metrics, and the small HTTP endpoint that serves them with the HTTP probes.

Every metric the mesh exports is defined here, with the seed's names where the seed has one, so
dashboards and tests can list them from one place. Each service process serves
`GET /metrics` (Prometheus text), `GET /health` (alive) and `GET /ready` (its gRPC health is
SERVING) on its service port + 1000.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

# ---- every service ----
RPC_CALLS = Counter(
    "nija_rpc_calls_total", "gRPC calls this server was asked to handle, by method (health and reflection "
    "included; an unknown method is counted as 'unknown')", ["method"],
)

# ---- router ----
TRADES_ROUTED = Counter("nija_trades_routed_total", "Signals routed to a broker (each attempt)", ["broker", "pair"])
ROUTING_LATENCY = Histogram(
    "nija_routing_latency_seconds", "From a signal's arrival to its routing decision (permission check included)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
FAILOVERS = Counter("nija_failovers_total", "Orders handed to the next broker after one refused them", ["broker"])
RESERVATION_DENIALS = Counter("nija_reservation_denials_total", "Signals the permission service denied", ["reason"])

# ---- executor ----
EXECUTIONS = Counter("nija_executions_total", "Orders that reached a final state", ["broker", "pair", "status"])
EXECUTIONS_SUCCESS = Counter("nija_executions_success_total", "Orders that ended FILLED", ["broker", "pair"])
QUEUE_DEPTH = Gauge("nija_executor_queue_depth", "Orders waiting in the executor's queue", ["broker"])
BREAKER_STATE = Gauge("nija_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["broker"])
RATE_LIMIT_WAITS = Counter("nija_rate_limit_waits_total", "Venue requests that waited for rate-limit budget", ["broker"])

# ---- aggregator ----
LEDGER_WRITE_LATENCY = Histogram(
    "nija_ledger_write_seconds", "From a write's arrival to its durable commit (group commit included)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
STREAM_WATCHERS = Gauge("nija_stream_watchers", "Live WatchUpdates streams")

# ---- webhook gateway ----
WEBHOOK_ALERTS = Counter(
    "nija_webhook_alerts_total", "TradingView alerts received, by strategy and outcome "
    "(accepted, duplicate, or the refusal's reason)", ["strategy", "outcome"],
)
WEBHOOK_FANOUT = Histogram(
    "nija_webhook_fanout_seconds", "From an accepted alert's fan-out call to the router's summary (or failure)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0),
)

#: The metric names as a dashboard queries them (histograms add _bucket, _sum, _count).
EXPORTED = (
    "nija_rpc_calls_total",
    "nija_trades_routed_total", "nija_routing_latency_seconds", "nija_failovers_total",
    "nija_reservation_denials_total", "nija_executions_total", "nija_executions_success_total",
    "nija_executor_queue_depth", "nija_breaker_state", "nija_rate_limit_waits_total",
    "nija_ledger_write_seconds", "nija_stream_watchers", "nija_webhook_alerts_total", "nija_webhook_fanout_seconds",
)
#: Of those, the histograms: queried through their _bucket, _sum and _count series.
HISTOGRAMS = ("nija_routing_latency_seconds", "nija_ledger_write_seconds", "nija_webhook_fanout_seconds")


class MetricsServer:
    """`/metrics`, `/health` and `/ready` over plain HTTP/1.1 (one request per connection)."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> MetricsServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (line := await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                if len(line) > 8192:
                    break
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if parts[:1] != ["GET"]:
                status, body, kind = "405 Method Not Allowed", b"GET only\n", "text/plain"
            elif path == "/metrics":
                status, body, kind = "200 OK", generate_latest(REGISTRY), CONTENT_TYPE_LATEST
            elif path == "/health":
                status, body, kind = "200 OK", b"ok\n", "text/plain"
            elif path == "/ready" and self._ready():
                status, body, kind = "200 OK", b"ready\n", "text/plain"
            elif path == "/ready":
                status, body, kind = "503 Service Unavailable", b"not ready\n", "text/plain"
            else:
                status, body, kind = "404 Not Found", b"not found\n", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
