"""The executor process: one per broker, same code, venue chosen by config."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from decimal import Decimal

import grpc
from nija.executor.v1 import executor_pb2_grpc

from services.aggregator.client import LedgerClient
from services.domain.breaker import BreakerState
from services.domain.brokers import BROKERS
from services.executor.engine import ExecutionConfig, ExecutorEngine
from services.executor.journal import Journal
from services.executor.servicer import ExecutorServicer
from services.executor.venues.base import Venue, VenueError
from services.runtime.config import ConfigError
from services.runtime.server import Health

log = logging.getLogger(__name__)

SERVICE_NAME = "nija.executor.v1.ExecutorService"


@dataclasses.dataclass(frozen=True)
class Config:
    broker: str = "binance"
    # "sim": the simulated exchanges process. (Live ccxt venues come later.)
    venue: str = "sim"
    simexchange_target: str = "127.0.0.1:50070"
    aggregator_target: str = "127.0.0.1:50053"
    # The in-flight journal (default var/executor-<broker>.journal.db).
    journal_path: str = ""
    venue_timeout_s: float = 5.0
    ledger_timeout_s: float = 5.0
    # How often the books behind the executor info (liquidity, best prices) are re-read.
    info_refresh_s: float = 0.5
    # Pushed info changes are coalesced to at most one push per this interval.
    info_min_push_s: float = 0.05
    max_queue_size: int = 1000
    max_queue_per_user: int = 500
    concurrency: int = 16
    limit_offset_bps: Decimal = Decimal(5)
    limit_timeout_s: float = 30.0
    twap_slice_usd: Decimal = Decimal(5000)
    twap_max_slices: int = 10
    twap_interval_s: float = 1.0
    breaker_failures: int = 5
    breaker_open_s: float = 60.0
    # The exchange's published request limits, per account and per IP (off only for load tests
    # that flood a single account).
    rate_limits: bool = True
    book_refresh_per_s: float = 2.0

    def __post_init__(self) -> None:
        if self.broker not in BROKERS:
            raise ConfigError(f"broker must be one of {BROKERS}, got {self.broker!r}")
        if self.venue != "sim":
            raise ConfigError(f"venue must be 'sim' (live venues are not built yet), got {self.venue!r}")

    def execution(self) -> ExecutionConfig:
        return ExecutionConfig(
            max_queue_size=self.max_queue_size,
            max_queue_per_user=self.max_queue_per_user,
            concurrency=self.concurrency,
            limit_offset_bps=self.limit_offset_bps,
            limit_timeout_s=self.limit_timeout_s,
            twap_slice_usd=self.twap_slice_usd,
            twap_max_slices=self.twap_max_slices,
            twap_interval_s=self.twap_interval_s,
            breaker_failures=self.breaker_failures,
            breaker_open_s=self.breaker_open_s,
            rate_limits=self.rate_limits,
            book_refresh_per_s=self.book_refresh_per_s,
        )


def make_venue(config: Config) -> Venue:
    from services.executor.venues.sim import SimVenue

    return SimVenue(config.broker, config.simexchange_target, timeout_s=config.venue_timeout_s)


class ExecutorApp:
    service_names = (SERVICE_NAME,)

    def __init__(self, config: Config) -> None:
        self.config = config
        self._ledger = LedgerClient(config.aggregator_target, timeout_s=config.ledger_timeout_s)
        self._venue = make_venue(config)
        self._journal = Journal(config.journal_path or f"var/executor-{config.broker}.journal.db")
        self.engine = ExecutorEngine(
            config.broker, self._venue, self._ledger, config.execution(), journal=self._journal
        )
        self.servicer = ExecutorServicer(self.engine, config.info_min_push_s)
        self._health: Health | None = None
        self._refresher: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> None:
        executor_pb2_grpc.add_ExecutorServiceServicer_to_server(self.servicer, server)

    async def start(self, health: Health) -> None:
        self._health = health
        log.info("executor config", extra={"config": dataclasses.asdict(self.config)})
        await health.set_serving(False)  # until the venue's markets are loaded
        await self._journal.open()
        self.engine.start_workers()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="executor-refresh")

    async def _refresh_loop(self) -> None:
        """Load markets (retrying until the venue answers), then keep quotes and health current."""
        assert self._health is not None
        while True:
            try:
                if not self.engine.ready:
                    await self.engine.load_markets()
                    await self.engine.recover()
                await self.engine.refresh_quotes()
            except VenueError as exc:
                log.warning("venue not reachable", extra={"error": repr(exc)})
            # SERVING once routers can score this broker: markets loaded, every book read once.
            serving = self.engine.quotes_complete and self.engine.breaker.state is not BreakerState.OPEN
            if serving != self._health.serving:
                await self._health.set_serving(serving)
            await asyncio.sleep(self.config.info_refresh_s)

    async def drain(self, grace_s: float) -> None:
        await self.engine.drain(grace_s)

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.engine.stop()
        await self._venue.close()
        await self._ledger.close()
        await self._journal.close()


def build_app(config: Config) -> ExecutorApp:
    return ExecutorApp(config)
