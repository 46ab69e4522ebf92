"""The aggregator process: its config and the App the runtime bootstrap serves."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import grpc
from nija.aggregator.v1 import aggregator_pb2_grpc
from nija.common.v1 import common_pb2

from services.aggregator.hub import Hub
from services.aggregator.ledger import Ledger, WebhookStore
from services.aggregator.notifications import Notifications, SenderSettings
from services.aggregator.position_feed import PositionFeed
from services.aggregator.servicer import AggregatorServicer
from services.aggregator.sweeper import SweepConfig, Sweeper
from services.domain.brokers import BROKERS, DEFAULT_PORTS
from services.permission.client import PermissionClient
from services.runtime.auth import Authenticate, AuthInterceptor, Rule, services_only, user_scoped
from services.runtime.config import ConfigError, redact_url
from services.runtime.limits import ServerLimits
from services.runtime.security import Security
from services.runtime.server import Health

log = logging.getLogger(__name__)

SERVICE_NAME = "nija.aggregator.v1.AggregatorService"

_WRITERS = ("router", *(f"executor-{b}" for b in BROKERS))
ACCESS: dict[str, Rule] = {
    f"/{SERVICE_NAME}/CreateOrder": services_only("router"),
    f"/{SERVICE_NAME}/RecordUpdate": services_only(*_WRITERS),
    f"/{SERVICE_NAME}/RecordUpdates": services_only(*_WRITERS),
    # People watch and read their own orders; routers follow the orders they submitted.
    f"/{SERVICE_NAME}/WatchUpdates": user_scoped(lambda r: r.user_id, services=("router",)),
    # Executors read an order when recovering it from their journal (was it routed elsewhere?).
    f"/{SERVICE_NAME}/GetOrder": user_scoped(lambda r: r.user_id, services=_WRITERS),
    f"/{SERVICE_NAME}/ListOrders": user_scoped(lambda r: r.user_id, services=("router",)),
    f"/{SERVICE_NAME}/ListFills": user_scoped(lambda r: r.user_id, services=("router",)),
    f"/{SERVICE_NAME}/GetDailySummary": user_scoped(lambda r: r.user_id, services=("router",)),
    # Webhooks: users manage their own (admins may too).
    f"/{SERVICE_NAME}/SetWebhook": user_scoped(lambda r: r.user_id),
    f"/{SERVICE_NAME}/ListWebhooks": user_scoped(lambda r: r.user_id),
    f"/{SERVICE_NAME}/DeleteWebhook": user_scoped(lambda r: r.user_id),
    f"/{SERVICE_NAME}/ListDeliveries": user_scoped(lambda r: r.user_id),
}


@dataclasses.dataclass(frozen=True)
class Config:
    #: The SQLite ledger file (its directory is created at start).
    database_path: str = "var/aggregator.db"
    #: PostgreSQL (postgresql://...) instead of the SQLite file; `nija serve` takes it from
    #: NIJA_DATABASE_URL.
    database_url: str = ""
    #: Live updates buffered per watcher before it is cut off with WATCHER_TOO_SLOW.
    watcher_buffer: int = 1000
    #: Updates read per query while replaying a watcher's history.
    replay_page: int = 500
    #: Authenticates callers, and receives every fill and final state (positions, reservations).
    permission_target: str = f"127.0.0.1:{DEFAULT_PORTS['permission']}"
    rpc_timeout_s: float = 5.0
    #: Webhooks: each POST's timeout; attempts before a delivery is FAILED; the retry backoff
    #: (exponential with jitter from base to cap); POSTs in flight at once.
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 10
    webhook_backoff_base_s: float = 1.0
    webhook_backoff_cap_s: float = 300.0
    webhook_concurrency: int = 8
    #: An order left PENDING or ROUTING this long with no update was dropped by its router before
    #: an executor took it: it is ended FAILED, nothing having been sent (services.aggregator.sweeper).
    stale_order_s: float = 60.0
    #: WatchUpdates streams one user or strategy may hold open here; one more is TOO_MANY_STREAMS.
    max_streams_per_principal: int = ServerLimits.max_streams_per_principal

    def __post_init__(self) -> None:
        if not self.database_path:
            raise ConfigError("database_path is required")
        if self.watcher_buffer < 1:
            raise ConfigError(f"watcher_buffer must be at least 1, got {self.watcher_buffer}")
        if self.replay_page < 1:
            raise ConfigError(f"replay_page must be at least 1, got {self.replay_page}")
        if not (self.webhook_timeout_s > 0 and self.webhook_max_attempts >= 1 and self.webhook_concurrency >= 1):
            raise ConfigError("webhook_timeout_s must be positive, webhook_max_attempts and webhook_concurrency at least 1")
        if not 0 < self.webhook_backoff_base_s <= self.webhook_backoff_cap_s:
            raise ConfigError("webhook backoff: need 0 < webhook_backoff_base_s <= webhook_backoff_cap_s")
        if self.stale_order_s < 30:
            raise ConfigError(f"stale_order_s must be at least 30 (routers and executors need time), got {self.stale_order_s}")
        self.limits()

    def limits(self) -> ServerLimits:
        return ServerLimits(max_streams_per_principal=self.max_streams_per_principal)

    def webhook_settings(self) -> SenderSettings:
        return SenderSettings(
            timeout_s=self.webhook_timeout_s,
            max_attempts=self.webhook_max_attempts,
            backoff_base_s=self.webhook_backoff_base_s,
            backoff_cap_s=self.webhook_backoff_cap_s,
            concurrency=self.webhook_concurrency,
        )


class App:
    service_names = (SERVICE_NAME,)

    def __init__(self, config: Config, security: Security, authenticate: Authenticate | None = None) -> None:
        self.config = config
        self.limits = config.limits()
        self.hub = Hub(config.watcher_buffer)
        self.permission = PermissionClient(config.permission_target, security, timeout_s=config.rpc_timeout_s)
        self.ledger = Ledger(config.database_url or config.database_path, on_commit=self._committed)
        self.feed = PositionFeed(self.ledger, self.permission.apply_execution, apply_batch=self.permission.apply_executions)
        # Webhooks: kill switch changes come from the permission service's WatchControls.
        self.notifications = Notifications(
            WebhookStore(self.ledger), config.webhook_settings(), controls=self.permission.watch_controls
        )
        self.sweeper = Sweeper(self.ledger, SweepConfig(stale_s=config.stale_order_s))
        self._sweeping: asyncio.Task[None] | None = None
        self.servicer = AggregatorServicer(self.ledger, self.hub, config.replay_page, self.notifications)
        # Callers' tokens are checked by the permission service (cached briefly), unless the
        # caller of build_app injects another authority.
        self.interceptors = (AuthInterceptor(ACCESS, authenticate or self.permission.authenticator()),)

    def _committed(self, update: common_pb2.ExecutionUpdate) -> None:
        self.hub.publish(update)
        self.feed.wake()
        self.notifications.wake()

    def register(self, server: grpc.aio.Server) -> None:
        aggregator_pb2_grpc.add_AggregatorServiceServicer_to_server(self.servicer, server)

    async def start(self, health: Health) -> None:
        config = dataclasses.asdict(self.config) | {"database_url": redact_url(self.config.database_url)}
        log.info("aggregator config", extra={"config": config})
        await self.ledger.open()
        self.feed.start()
        await self.notifications.start()
        self._sweeping = asyncio.create_task(self.sweeper.run(), name="stale-order-sweep")

    async def stop(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            await asyncio.gather(self._sweeping, return_exceptions=True)
        await self.feed.stop()
        await self.notifications.stop()
        await self.ledger.close()
        await self.permission.close()


def build_app(config: Config, security: Security, authenticate: Authenticate | None = None) -> App:
    return App(config, security, authenticate)
