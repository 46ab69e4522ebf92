"""The aggregator process: its config and the App the runtime bootstrap serves."""

from __future__ import annotations

import dataclasses
import logging

import grpc
from nija.aggregator.v1 import aggregator_pb2_grpc
from nija.common.v1 import common_pb2

from services.aggregator.hub import Hub
from services.aggregator.ledger import Ledger
from services.aggregator.position_feed import PositionFeed
from services.aggregator.servicer import AggregatorServicer
from services.domain.brokers import BROKERS, DEFAULT_PORTS
from services.permission.client import PermissionClient
from services.runtime.auth import Authenticate, AuthInterceptor, Rule, services_only, user_scoped
from services.runtime.config import ConfigError
from services.runtime.security import Security
from services.runtime.server import Health

log = logging.getLogger(__name__)

SERVICE_NAME = "nija.aggregator.v1.AggregatorService"

_WRITERS = ("router", *(f"executor-{b}" for b in BROKERS))
ACCESS: dict[str, Rule] = {
    f"/{SERVICE_NAME}/CreateOrder": services_only("router"),
    f"/{SERVICE_NAME}/RecordUpdate": services_only(*_WRITERS),
    # People watch and read their own orders; routers follow the orders they submitted.
    f"/{SERVICE_NAME}/WatchUpdates": user_scoped(lambda r: r.user_id, services=("router",)),
    f"/{SERVICE_NAME}/GetOrder": user_scoped(lambda r: r.user_id, services=("router",)),
}


@dataclasses.dataclass(frozen=True)
class Config:
    #: The SQLite ledger file (its directory is created at start).
    database_path: str = "var/aggregator.db"
    #: Live updates buffered per watcher before it is cut off with WATCHER_TOO_SLOW.
    watcher_buffer: int = 1000
    #: Updates read per query while replaying a watcher's history.
    replay_page: int = 500
    #: Authenticates callers, and receives every fill and final state (positions, reservations).
    permission_target: str = f"127.0.0.1:{DEFAULT_PORTS['permission']}"
    rpc_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.database_path:
            raise ConfigError("database_path is required")
        if self.watcher_buffer < 1:
            raise ConfigError(f"watcher_buffer must be at least 1, got {self.watcher_buffer}")
        if self.replay_page < 1:
            raise ConfigError(f"replay_page must be at least 1, got {self.replay_page}")


class App:
    service_names = (SERVICE_NAME,)

    def __init__(self, config: Config, security: Security, authenticate: Authenticate | None = None) -> None:
        self.config = config
        self.hub = Hub(config.watcher_buffer)
        self.permission = PermissionClient(config.permission_target, security, timeout_s=config.rpc_timeout_s)
        self.ledger = Ledger(config.database_path, on_commit=self._committed)
        self.feed = PositionFeed(self.ledger, self.permission.apply_execution)
        self.servicer = AggregatorServicer(self.ledger, self.hub, config.replay_page)
        # Callers' tokens are checked by the permission service (cached briefly), unless the
        # caller of build_app injects another authority.
        self.interceptors = (AuthInterceptor(ACCESS, authenticate or self.permission.authenticator()),)

    def _committed(self, update: common_pb2.ExecutionUpdate) -> None:
        self.hub.publish(update)
        self.feed.wake()

    def register(self, server: grpc.aio.Server) -> None:
        aggregator_pb2_grpc.add_AggregatorServiceServicer_to_server(self.servicer, server)

    async def start(self, health: Health) -> None:
        log.info("aggregator config", extra={"config": dataclasses.asdict(self.config)})
        await self.ledger.open()
        self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()
        await self.ledger.close()
        await self.permission.close()


def build_app(config: Config, security: Security, authenticate: Authenticate | None = None) -> App:
    return App(config, security, authenticate)
