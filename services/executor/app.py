"""The executor process: one per broker, same code, venue chosen by config."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import pathlib
from decimal import Decimal

import grpc
from nija.executor.v1 import executor_pb2_grpc

from services.aggregator.client import LedgerClient
from services.domain.breaker import BreakerState
from services.domain.brokers import BROKERS, DEFAULT_PORTS
from services.executor.accounts import AccountBook
from services.executor.engine import ExecutionConfig, ExecutorEngine
from services.executor.journal import Journal
from services.executor.servicer import ExecutorServicer
from services.executor.venues.base import Account, Venue, VenueError
from services.permission.client import PermissionClient
from services.runtime import tracing
from services.runtime.auth import Authenticate, AuthInterceptor, PrincipalKind, Rule, services_only
from services.runtime.config import ConfigError
from services.runtime.security import Security
from services.runtime.server import Health

log = logging.getLogger(__name__)

SERVICE_NAME = "nija.executor.v1.ExecutorService"

#: Only routers place and cancel orders; operators (admins) may also read what routers see.
ACCESS: dict[str, Rule] = {
    f"/{SERVICE_NAME}/Execute": services_only("router"),
    f"/{SERVICE_NAME}/CancelOrder": services_only("router"),
    # A balance read with a user's keys: an operator's check, never a caller's.
    f"/{SERVICE_NAME}/CheckAccount": Rule(frozenset({PrincipalKind.ADMIN}), frozenset()),
    f"/{SERVICE_NAME}/GetExecutorInfo": Rule(frozenset({PrincipalKind.SERVICE, PrincipalKind.ADMIN}), frozenset({"router"})),
    f"/{SERVICE_NAME}/WatchExecutorInfo": Rule(frozenset({PrincipalKind.SERVICE, PrincipalKind.ADMIN}), frozenset({"router"})),
}


@dataclasses.dataclass(frozen=True)
class Config:
    broker: str = "binance"
    #: "sim": the simulated exchanges process. "ccxt": the broker's real REST API through ccxt,
    #: with each user's stored keys (or an emulator of it, when exchange_url is set).
    venue: str = "sim"
    #: With venue "ccxt": send every request here instead of the real exchange (an emulator or a
    #: sandbox). Empty: the real exchange, which also needs `live`.
    exchange_url: str = ""
    #: With venue "ccxt" and no exchange_url, real orders move real money: this must be set too.
    live: bool = False
    #: With venue "ccxt": a JSON file {"api_key": ..., "api_secret": ...} of an operator key for
    #: the market reads an exchange answers only signed (Alpaca's asset list). Never a user's key.
    market_keys_file: str = ""
    simexchange_target: str = "127.0.0.1:50070"
    aggregator_target: str = "127.0.0.1:50053"
    #: Authenticates callers; the users' API keys and the kill switches come from it.
    permission_target: str = f"127.0.0.1:{DEFAULT_PORTS['permission']}"
    permission_timeout_s: float = 2.0
    #: How long a user's keys are kept in memory before they are read again; while the permission
    #: service's API keys' version is followed (WatchControls), `credentials_followed_ttl_s`.
    credentials_ttl_s: float = 30.0
    credentials_followed_ttl_s: float = 600.0
    #: How long an order's keys read is tried again while the permission service is busy or away.
    credentials_retry_s: float = 10.0
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
        if self.venue not in ("sim", "ccxt"):
            raise ConfigError(f"venue must be 'sim' or 'ccxt', got {self.venue!r}")
        if self.venue == "ccxt" and not self.exchange_url and not self.live:
            raise ConfigError(
                f"venue 'ccxt' without exchange_url trades on the real {self.broker} exchange with the users' "
                "keys: set live=true to confirm (or exchange_url to use an emulator)"
            )
        if self.exchange_url and not self.exchange_url.startswith(("http://", "https://")):
            raise ConfigError(f"exchange_url must be an http(s) URL, got {self.exchange_url!r}")

    @property
    def real_money(self) -> bool:
        return self.venue == "ccxt" and not self.exchange_url

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
    if config.venue == "ccxt":
        from services.executor.venues.live import CcxtVenue, adapter

        exchange = adapter(config.broker)
        market_account = _market_account(config.market_keys_file) if config.market_keys_file else None
        if getattr(exchange, "signed_market_reads", False) and market_account is None:
            raise ConfigError(f"{config.broker} answers market reads only signed: set market_keys_file")
        return CcxtVenue(
            exchange, base_url=config.exchange_url, timeout_s=config.venue_timeout_s, market_account=market_account
        )
    from services.executor.venues.sim import SimVenue

    # The simulated exchanges stand in for the exchanges themselves: outside the mesh, so the
    # mesh's token and certificates are not theirs to see.
    return SimVenue(config.broker, config.simexchange_target, timeout_s=config.venue_timeout_s)


def _market_account(path: str) -> Account:
    try:
        keys = json.loads(pathlib.Path(path).read_text())
        return Account(user_id="market-data", account_id="market-data", api_key=keys["api_key"],
                       api_secret=keys["api_secret"], passphrase=keys.get("passphrase", ""))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"market_keys_file {path}: expected JSON with api_key and api_secret ({exc})") from None


class ExecutorApp:
    service_names = (SERVICE_NAME,)

    def __init__(self, config: Config, security: Security, authenticate: Authenticate | None = None) -> None:
        self.config = config
        self._ledger = LedgerClient(config.aggregator_target, security, timeout_s=config.ledger_timeout_s)
        self.permission = PermissionClient(config.permission_target, security, timeout_s=config.permission_timeout_s)
        self.accounts = AccountBook(config.broker, self.permission.credentials, ttl_s=config.credentials_ttl_s,
                                    followed_ttl_s=config.credentials_followed_ttl_s,
                                    retry_s=config.credentials_retry_s)
        self._venue = make_venue(config)
        self._journal = Journal(config.journal_path or f"var/executor-{config.broker}.journal.db")
        self.engine = ExecutorEngine(
            config.broker, self._venue, self._ledger, config.execution(), journal=self._journal,
            accounts=self.accounts.account,
        )
        self.servicer = ExecutorServicer(self.engine, config.info_min_push_s)
        # Callers' tokens are checked by the permission service (cached briefly), unless the
        # caller of build_app injects another authority.
        self.interceptors = (AuthInterceptor(ACCESS, authenticate or self.permission.authenticator()),)
        self._health: Health | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._controls: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> None:
        executor_pb2_grpc.add_ExecutorServiceServicer_to_server(self.servicer, server)

    async def start(self, health: Health) -> None:
        self._health = health
        log.info("executor config", extra={"config": dataclasses.asdict(self.config)})
        if self.config.real_money:
            log.warning(
                "LIVE TRADING: orders go to the real %s exchange and move real money on the users' accounts",
                self.config.broker,
                extra={"broker": self.config.broker},
            )
        await health.set_serving(False)  # until the venue's markets are loaded
        await self._journal.open()
        self.engine.start_workers()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="executor-refresh")
        self._controls = asyncio.create_task(self._follow_kill_switches(), name="executor-controls")

    async def _follow_kill_switches(self) -> None:
        """Apply every change of the kill switches as the permission service announces it, and
        drop cached credentials when the API keys change."""
        async for controls in self.permission.watch_controls():
            self.accounts.follow(controls.api_keys_version)
            # Worded as the permission service words its denials.
            users = {u.user_id: f"kill switch is on for user {u.user_id}: {u.reason}" for u in controls.users}
            everyone = f"global kill switch is on: {controls.global_reason}" if controls.global_kill else ""
            try:
                await self.engine.apply_kill_switches(everyone, users)
            except Exception:
                log.exception("could not apply the kill switches")

    async def _refresh_loop(self) -> None:
        """Load markets (retrying until the venue answers), recover the journal's orders (retrying
        until the ledger answers), then keep quotes and health current."""
        assert self._health is not None
        recovered = False
        while True:
            try:
                if not self.engine.ready:
                    await self.engine.load_markets()
                if not recovered:
                    # Safe to run again after a failure part way: what it took is skipped.
                    await self.engine.recover()
                    recovered = True
                with tracing.untraced():
                    await self.engine.refresh_quotes()
            except VenueError as exc:
                log.warning("venue not reachable", extra={"error": repr(exc)})
            except Exception as exc:
                # The ledger away while orders are recovered: in a 10-minute chaos run on PostgreSQL
                # one such error ended this loop, and 548 journaled orders stayed QUEUED for good.
                log.warning("recovery or refresh failed; trying again", extra={"error": repr(exc)})
            # SERVING once routers can score this broker: markets loaded, every book read once.
            serving = self.engine.quotes_complete and self.engine.breaker.state is not BreakerState.OPEN
            if serving != self._health.serving:
                await self._health.set_serving(serving)
            await asyncio.sleep(self.config.info_refresh_s)

    async def drain(self, grace_s: float) -> None:
        await self.engine.drain(grace_s)

    async def stop(self) -> None:
        for task in (self._refresher, self._controls):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.engine.stop()
        await self._venue.close()
        await self._ledger.close()
        await self.permission.close()
        await self._journal.close()


def build_app(config: Config, security: Security, authenticate: Authenticate | None = None) -> ExecutorApp:
    return ExecutorApp(config, security, authenticate)
