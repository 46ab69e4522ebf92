"""The aggregator process: its config and the App the runtime bootstrap serves."""

from __future__ import annotations

import dataclasses
import logging

import grpc
from nija.aggregator.v1 import aggregator_pb2_grpc

from services.aggregator.hub import Hub
from services.aggregator.ledger import Ledger
from services.aggregator.servicer import AggregatorServicer
from services.runtime.config import ConfigError
from services.runtime.server import Health

log = logging.getLogger(__name__)

SERVICE_NAME = "nija.aggregator.v1.AggregatorService"


@dataclasses.dataclass(frozen=True)
class Config:
    #: The SQLite ledger file (its directory is created at start).
    database_path: str = "var/aggregator.db"
    #: Live updates buffered per watcher before it is cut off with WATCHER_TOO_SLOW.
    watcher_buffer: int = 1000
    #: Updates read per query while replaying a watcher's history.
    replay_page: int = 500

    def __post_init__(self) -> None:
        if not self.database_path:
            raise ConfigError("database_path is required")
        if self.watcher_buffer < 1:
            raise ConfigError(f"watcher_buffer must be at least 1, got {self.watcher_buffer}")
        if self.replay_page < 1:
            raise ConfigError(f"replay_page must be at least 1, got {self.replay_page}")


class App:
    service_names = (SERVICE_NAME,)

    def __init__(self, config: Config) -> None:
        self.config = config
        self.hub = Hub(config.watcher_buffer)
        self.ledger = Ledger(config.database_path, on_commit=self.hub.publish)
        self.servicer = AggregatorServicer(self.ledger, self.hub, config.replay_page)

    def register(self, server: grpc.aio.Server) -> None:
        aggregator_pb2_grpc.add_AggregatorServiceServicer_to_server(self.servicer, server)

    async def start(self, health: Health) -> None:
        log.info("aggregator config", extra={"config": dataclasses.asdict(self.config)})
        await self.ledger.open()

    async def stop(self) -> None:
        await self.ledger.close()


def build_app(config: Config) -> App:
    return App(config)
