"""The TradingView webhook gateway: alerts in over HTTP, strategy signals out to the router over gRPC.

`POST /webhook/<strategy_id>` answers within milliseconds (TradingView gives up after a few
seconds): 202 with the alert id once the alert is authenticated, valid, not a repeat and within
the strategy's rate; the fan-out (`RouterService/SubmitStrategySignal`) then runs in a background
task of its own, bounded in number, whatever the HTTP client does. `GET /alerts/<alert_id>` shows
what it became (services/gateway/results.py). The alert format is in services/gateway/alerts.py,
the strategies file's in services/gateway/strategies.py, the HTTP answers in http.py.

The process is a mesh service like the others: gRPC health (SERVING only while the router
answers its health check, so /ready says whether alerts can be placed), /metrics, /health and
/ready on the gRPC port + 1000, graceful SIGTERM. Each strategy calls the router with its own
token (a STRATEGY principal), so the router checks that strategy's subscribers, not ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.domain.brokers import DEFAULT_PORTS, GATEWAY_HTTP_PORT
from services.gateway.alerts import (
    PASSPHRASE_HEADER,
    Alert,
    Refusal,
    Strategy,
    parse_alert,
    passphrase_ok,
    sign,
)
from services.gateway.http import Answer, WebhookServer
from services.gateway.limits import Deduper, RateLimiter, retry_after_header
from services.gateway.results import DONE, AlertRecord, ResultStore
from services.gateway.strategies import load_strategies
from services.runtime.channels import open_channel
from services.runtime.config import ConfigError
from services.runtime.errors import reason_of
from services.runtime.metrics import WEBHOOK_ALERTS, WEBHOOK_FANOUT
from services.runtime.security import Security
from services.runtime.server import Health, write_atomically
from services.status.members import HEALTH_NAMES

log = logging.getLogger(__name__)

#: The name the gateway's health is reported under (it serves no gRPC API of its own).
SERVICE_NAME = "nija.gateway.v1.WebhookGateway"


@dataclasses.dataclass(frozen=True)
class Config:
    router_target: str = f"127.0.0.1:{DEFAULT_PORTS['router']}"
    #: The strategies that may post alerts (format: services/gateway/strategies.py).
    strategies_file: str = ""
    #: Where TradingView's HTTP requests arrive (0: any free port).
    http_host: str = "127.0.0.1"
    http_port: int = GATEWAY_HTTP_PORT
    #: The HTTP listener's bound port is written here once it listens (for port 0).
    http_port_file: str = ""
    #: HTTPS on the listener itself, when TLS is not terminated in front of it.
    http_tls_cert_file: str = ""
    http_tls_key_file: str = ""
    #: Larger bodies are answered 413 without being read to the end.
    max_body_bytes: int = 16 * 1024
    #: A repeated alert (same id, or same content) within this many seconds is a duplicate.
    dedupe_window_s: float = 300.0
    #: Deadline of one fan-out call to the router.
    fanout_timeout_s: float = 600.0
    #: Fan-outs running at once; more wait their turn.
    max_concurrent_fanouts: int = 32
    #: Accepted alerts not yet done; beyond it new alerts are answered 503 (overload, not bad input).
    max_pending_fanouts: int = 1000
    #: Results kept for GET /alerts (least recently used out first).
    max_results: int = 10_000
    #: How often the router's health is checked (the gateway's readiness follows it).
    router_check_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 <= self.http_port <= 65535:
            raise ConfigError(f"http_port must be 0..65535, got {self.http_port}")
        if bool(self.http_tls_cert_file) != bool(self.http_tls_key_file):
            raise ConfigError("HTTPS needs both http_tls_cert_file and http_tls_key_file")
        for name in ("max_body_bytes", "max_concurrent_fanouts", "max_pending_fanouts", "max_results"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("dedupe_window_s", "fanout_timeout_s", "router_check_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _problem(refusal: Refusal, headers: dict[str, str] | None = None) -> Answer:
    return Answer(refusal.status, refusal.body(), headers or {})


class GatewayApp:
    service_names = (SERVICE_NAME,)

    def __init__(
        self,
        config: Config,
        security: Security,
        strategies: dict[str, Strategy] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.security = security
        # Read (and checked) at start: a wrong file stops the process with a ConfigError.
        self.strategies = strategies if strategies is not None else load_strategies(config.strategies_file)
        self._wall_clock = wall_clock
        self.dedupe = Deduper(config.dedupe_window_s, clock)
        self.rates = RateLimiter(clock)
        self.results = ResultStore(config.max_results)
        self.http = WebhookServer(self, config)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._health_channel: grpc.aio.Channel | None = None
        self._health: Health | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def register(self, server: grpc.aio.Server) -> None:
        """No gRPC API of its own: the runtime's health and reflection only."""

    async def start(self, health: Health) -> None:
        log.info("gateway config", extra={"config": dataclasses.asdict(self.config),
                                          "strategies": sorted(self.strategies)})
        self._health = health
        await health.set_serving(False)  # until the router answers
        self._slots = asyncio.Semaphore(self.config.max_concurrent_fanouts)
        # One channel per strategy, each presenting that strategy's token (TLS as the process's).
        for strategy in self.strategies.values():
            self._channels[strategy.strategy_id] = open_channel(
                self.config.router_target, dataclasses.replace(self.security, token=strategy.token)
            )
        self._health_channel = open_channel(self.config.router_target, dataclasses.replace(self.security, token=""))
        try:
            await self.http.start()
        except BaseException:
            await self.stop()
            raise
        if self.config.http_port_file:
            write_atomically(self.config.http_port_file, str(self.http.port))
        self._watcher = asyncio.create_task(self._watch_router(), name="gateway-router-health")

    async def drain(self, grace_s: float) -> None:
        """Stop taking alerts, then give running fan-outs the grace to finish."""
        await self._stop_watcher()
        await self.http.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)

    async def stop(self) -> None:
        await self._stop_watcher()
        await self.http.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        channels = [*self._channels.values(), *([self._health_channel] if self._health_channel else [])]
        self._channels, self._health_channel = {}, None
        for channel in channels:
            await channel.close()

    async def _stop_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch_router(self) -> None:
        assert self._health is not None and self._health_channel is not None
        stub = health_pb2_grpc.HealthStub(self._health_channel)
        while True:
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(service=HEALTH_NAMES["router"]), timeout=2.0)
                up = response.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                up = False
            if up != self._health.serving:
                log.info("router reachable" if up else "router not reachable", extra={"target": self.config.router_target})
                await self._health.set_serving(up)
            # Soon again while the router is away: `nija up` and a rollout wait for us.
            interval = self.config.router_check_interval_s
            await asyncio.sleep(interval if up else min(interval, 0.25))

    # ---- alerts ----------------------------------------------------------------------------------

    def receive(self, strategy_id: str, body: bytes, signature: str | None) -> Answer:
        """One POST /webhook/<strategy_id>: answered at once; the fan-out runs in the background."""
        strategy = self.strategies.get(strategy_id)
        if strategy is None:
            WEBHOOK_ALERTS.labels("unknown", "UNKNOWN_STRATEGY").inc()
            return _problem(Refusal(404, "UNKNOWN_STRATEGY", "no strategy of that name posts alerts here"))
        parsed = parse_alert(body, strategy, signature, self._wall_clock(), self.config.dedupe_window_s)
        if isinstance(parsed, Refusal):
            WEBHOOK_ALERTS.labels(strategy_id, parsed.reason).inc()
            log.info("alert refused", extra={"strategy": strategy_id, "reason": parsed.reason, "detail": parsed.message})
            return _problem(parsed)
        keys = (f"id\n{strategy_id}\n{parsed.alert_id}", f"content\n{parsed.content_hash}")
        first = self.dedupe.seen(keys)
        if first is not None:
            WEBHOOK_ALERTS.labels(strategy_id, "duplicate").inc()
            return Answer(200, {"status": "duplicate", "alert_id": first, "result": f"/alerts/{first}"})
        wait_s = self.rates.take(strategy_id, strategy.rate_per_minute, strategy.burst)
        if wait_s > 0:
            WEBHOOK_ALERTS.labels(strategy_id, "RATE_LIMITED").inc()
            refusal = Refusal(429, "RATE_LIMITED", f"strategy {strategy_id} is over {strategy.rate_per_minute:g} alerts per minute")
            return _problem(refusal, {"Retry-After": retry_after_header(wait_s)})
        if len(self._tasks) >= self.config.max_pending_fanouts:
            WEBHOOK_ALERTS.labels(strategy_id, "BUSY").inc()
            return _problem(Refusal(503, "BUSY", "too many alerts in flight; retry shortly"), {"Retry-After": "5"})
        self.dedupe.remember(keys, parsed.alert_id)
        record = self.results.add(AlertRecord(parsed))
        task = asyncio.create_task(self._fan_out(record), name=f"fan-out {parsed.alert_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        WEBHOOK_ALERTS.labels(strategy_id, "accepted").inc()
        log.info("alert accepted", extra={"strategy": strategy_id, "alert_id": parsed.alert_id, "pair": parsed.pair,
                                          "side": parsed.side.value, "size_usd": str(parsed.size_usd)})
        return Answer(202, {"alert_id": parsed.alert_id, "status": "accepted", "result": f"/alerts/{parsed.alert_id}"})

    def result(self, alert_id: str, passphrase: str | None, signature: str | None) -> Answer:
        """GET /alerts/<alert_id>, authenticated as the alert's strategy: its passphrase in
        X-Nija-Passphrase, or (for a signing strategy) X-Nija-Signature over the alert id."""
        owners = self.results.strategies_with(alert_id)
        if not owners:
            return _problem(Refusal(404, "UNKNOWN_ALERT", "no alert with that id (results are kept in memory, bounded)"))
        for strategy_id in owners:
            strategy = self.strategies[strategy_id]
            if self._may_read(strategy, alert_id, passphrase, signature):
                record = self.results.get(strategy_id, alert_id)
                assert record is not None
                return Answer(200, record.to_json())
        return _problem(Refusal(401, "BAD_PASSPHRASE", f"send the strategy's passphrase in {PASSPHRASE_HEADER}"))

    @staticmethod
    def _may_read(strategy: Strategy, alert_id: str, passphrase: str | None, signature: str | None) -> bool:
        if strategy.passphrase_sha256 is not None and passphrase is not None:
            return passphrase_ok(strategy, passphrase)
        if strategy.hmac_secret is not None and signature:
            return hmac.compare_digest(sign(strategy.hmac_secret, alert_id.encode()).encode(),
                                       signature.strip().lower().encode("utf-8", "replace"))
        return False

    async def _fan_out(self, record: AlertRecord) -> None:
        assert self._slots is not None
        alert: Alert = record.alert
        async with self._slots:
            started = time.monotonic()
            stub = router_pb2_grpc.RouterServiceStub(self._channels[alert.strategy_id])
            request = router_pb2.SubmitStrategySignalRequest(signal=alert.to_proto(_utc_now()))
            try:
                # wait_for_ready: a router restarting (a rollout) delays the alert instead of failing it.
                call = stub.SubmitStrategySignal(request, timeout=self.config.fanout_timeout_s, wait_for_ready=True)
                async for event in call:
                    record.apply(event)
                if record.status != DONE:
                    record.fail("NO_SUMMARY", "NO_SUMMARY", "the router's stream ended before its summary")
            except grpc.aio.AioRpcError as exc:
                record.fail(exc.code().name, reason_of(exc) or exc.code().name, exc.details() or "")
            except asyncio.CancelledError:
                record.fail("CANCELLED", "GATEWAY_STOPPED", "the gateway stopped before the router's summary")
                raise
            except Exception as exc:  # a bug must not take the gateway down; the alert says so
                log.exception("fan-out failed", extra={"alert_id": alert.alert_id})
                record.fail("INTERNAL", "INTERNAL", type(exc).__name__)
            finally:
                WEBHOOK_FANOUT.observe(time.monotonic() - started)
        outcome: dict[str, Any] = {"strategy": alert.strategy_id, "alert_id": alert.alert_id, "status": record.status}
        if record.summary:
            outcome["outcomes"] = record.summary["outcomes"]
        if record.error:
            outcome["error"] = record.error
        log.info("alert fanned out", extra=outcome)


def build_app(config: Config, security: Security | None = None) -> GatewayApp:
    return GatewayApp(config, security or Security())

