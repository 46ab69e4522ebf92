"""The router process: stateless; holds channels to permission, aggregator and every executor."""

from __future__ import annotations

import dataclasses
import logging
import random
from decimal import Decimal

import grpc
from nija.router.v1 import router_pb2_grpc

from services.aggregator.client import LedgerClient
from services.domain.brokers import BROKERS, DEFAULT_PORTS
from services.domain.routing import Balancing, BalancingConfig
from services.permission.client import PermissionClient
from services.router.directory import ExecutorDirectory
from services.router.fanout import FanOut
from services.router.engine import RouterEngine, RoutingConfig
from services.router.servicer import RouterServicer
from services.runtime.auth import Authenticate, AuthInterceptor, PrincipalKind, Rule, user_scoped
from services.runtime.config import ConfigError
from services.runtime.limits import ServerLimits
from services.runtime.security import Security
from services.runtime.server import Health

log = logging.getLogger(__name__)

SERVICE_NAME = "nija.router.v1.RouterService"

#: Who may call what: users for themselves, strategies for their subscribers, admins.
ACCESS: dict[str, Rule] = {
    f"/{SERVICE_NAME}/SubmitSignal": user_scoped(lambda r: r.signal.user_id),
    f"/{SERVICE_NAME}/QuoteRoute": user_scoped(lambda r: r.signal.user_id),
    f"/{SERVICE_NAME}/CancelSignal": user_scoped(lambda r: r.user_id),
    # A strategy for itself (the servicer holds it to its own strategy_id), or an admin.
    f"/{SERVICE_NAME}/SubmitStrategySignal": Rule(frozenset({PrincipalKind.STRATEGY, PrincipalKind.ADMIN})),
    # SubmitSignal's callers; a request stream cannot be user-scoped, so the servicer checks
    # each signal's user as the interceptor checks SubmitSignal's.
    f"/{SERVICE_NAME}/SubmitSignals": Rule(frozenset({PrincipalKind.USER, PrincipalKind.STRATEGY, PrincipalKind.ADMIN})),
}

_DEFAULT_EXECUTORS = ",".join(f"{b}=127.0.0.1:{DEFAULT_PORTS['executor-' + b]}" for b in BROKERS)


@dataclasses.dataclass(frozen=True)
class Config:
    permission_target: str = f"127.0.0.1:{DEFAULT_PORTS['permission']}"
    aggregator_target: str = f"127.0.0.1:{DEFAULT_PORTS['aggregator']}"
    # "broker=host:port,..."
    executor_targets: str = _DEFAULT_EXECUTORS
    # Executors push their info at least this often; info older than the stale bound excludes them.
    info_push_interval_ms: int = 500
    info_stale_after_s: float = 3.0
    rpc_timeout_s: float = 5.0
    # A burst queues at the permission service (one user's reservations go one at a time).
    reserve_timeout_s: float = 60.0
    execute_timeout_s: float = 600.0
    max_attempts: int = 3
    # How long an executor whose stream broke before it recorded anything has to show it admitted
    # the order (e.g. a restart recovering it) before the order goes to the next broker.
    admission_wait_s: float = 10.0
    # Near-equal brokers share the flow: best | score_weighted | least_loaded.
    balancing: str = "score_weighted"
    balancing_margin: float = 6.0
    min_split_leg_usd: Decimal = Decimal(10)
    # Seed of the load balancer's random choice (None: a fresh one each start).
    seed: int | None = None
    # A strategy signal's children started at once (each is a full order: reservation, stream).
    fanout_concurrency: int = 64
    # Signals one SubmitSignals stream may have in flight; one more is refused (STREAM_IN_FLIGHT_LIMIT).
    max_stream_in_flight: int = 1000
    # Signals of one user decided at once; the user's others wait (never refused for it).
    decisions_per_user: int = 8
    # A rate-limit refusal holds its user's decision slot this long (a flood slows itself).
    rate_limited_hold_s: float = 0.25
    # Signal streams one user or strategy may hold open here; one more is TOO_MANY_STREAMS. Each
    # order a client follows is a stream: a strategy trading for its subscribers, or the seed's
    # burst of 1,000 at once, holds many; the decision slots and rate limits bound what they cost.
    max_streams_per_principal: int = ServerLimits.max_streams_per_connection

    def executors(self) -> dict[str, str]:
        out = {}
        for item in self.executor_targets.split(","):
            broker, sep, target = item.strip().partition("=")
            if not sep or broker not in BROKERS or not target:
                raise ConfigError(f"executor_targets: expected broker=host:port with broker in {BROKERS}, got {item!r}")
            out[broker] = target
        return out

    def __post_init__(self) -> None:
        self.executors()
        self.limits()
        if self.balancing not in {b.value for b in Balancing}:
            raise ConfigError(f"balancing must be one of {[b.value for b in Balancing]}, got {self.balancing!r}")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if self.fanout_concurrency < 1:
            raise ConfigError("fanout_concurrency must be at least 1")
        if self.max_stream_in_flight < 1:
            raise ConfigError("max_stream_in_flight must be at least 1")
        if self.decisions_per_user < 1:
            raise ConfigError("decisions_per_user must be at least 1")
        if not 0 <= self.rate_limited_hold_s <= 10:
            raise ConfigError("rate_limited_hold_s must be between 0 and 10")

    def limits(self) -> ServerLimits:
        return ServerLimits(max_streams_per_principal=self.max_streams_per_principal)

    def routing(self) -> RoutingConfig:
        return RoutingConfig(
            execute_timeout_s=self.execute_timeout_s,
            max_attempts=self.max_attempts,
            admission_wait_s=self.admission_wait_s,
            decisions_per_user=self.decisions_per_user,
            rate_limited_hold_s=self.rate_limited_hold_s,
            balancing=BalancingConfig(Balancing(self.balancing), self.balancing_margin, self.min_split_leg_usd),
        )


class RouterApp:
    service_names = (SERVICE_NAME,)

    def __init__(self, config: Config, security: Security, authenticate: Authenticate | None = None) -> None:
        self.config = config
        self.limits = config.limits()
        self.permission = PermissionClient(
            config.permission_target, security, timeout_s=config.rpc_timeout_s, reserve_timeout_s=config.reserve_timeout_s
        )
        self.ledger = LedgerClient(config.aggregator_target, security, timeout_s=config.rpc_timeout_s)
        self.directory = ExecutorDirectory(
            config.executors(),
            stale_after_s=config.info_stale_after_s,
            push_interval_ms=config.info_push_interval_ms,
            security=security,
        )
        # Callers' tokens are checked by the permission service (cached briefly), unless the
        # caller of build_app injects another authority.
        self.interceptors = (AuthInterceptor(ACCESS, authenticate or self.permission.authenticator()),)
        self.engine = RouterEngine(
            self.permission, self.ledger, self.directory, config.routing(), rng=random.Random(config.seed)
        )
        self.fanout = FanOut(self.engine, self.permission, self.ledger, config.fanout_concurrency)

    def register(self, server: grpc.aio.Server) -> None:
        router_pb2_grpc.add_RouterServiceServicer_to_server(
            RouterServicer(self.engine, self.fanout, self.config.max_stream_in_flight), server
        )

    async def start(self, health: Health) -> None:
        log.info("router config", extra={"config": dataclasses.asdict(self.config)})
        self.directory.start()

    async def stop(self) -> None:
        await self.engine.stop()
        await self.directory.stop()
        await self.permission.close()
        await self.ledger.close()


def build_app(config: Config, security: Security, authenticate: Authenticate | None = None) -> RouterApp:
    return RouterApp(config, security, authenticate)
