"""The simulated exchanges process: its config and the App the runtime bootstrap serves."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import secrets
from datetime import datetime, timezone
from decimal import Decimal

import grpc
from nija.simexchange.v1 import simexchange_pb2_grpc

from services.domain.money import BadDecimal, parse_decimal
from services.emulators import dialect
from services.emulators.base import Buckets, EmulatorServer, Exchange
from services.runtime.config import ConfigError
from services.runtime.server import Health, write_atomically
from services.simexchange.core import SimExchange, check_depth_multiplier, check_fee_schedule
from services.simexchange.listings import BROKER_PROFILES, FeeSchedule
from services.simexchange.network import Network
from services.simexchange.servicer import SimulatedExchangeServicer

log = logging.getLogger(__name__)

SERVICE_NAME = "nija.simexchange.v1.SimulatedExchangeService"


@dataclasses.dataclass(frozen=True)
class Config:
    #: Seconds between two ticks (reference prices move, books are rebuilt, resting orders fill).
    tick_interval_s: float = 0.25
    #: Standard deviation of one tick's reference price move, in basis points.
    volatility_bps: float = 2.0
    #: Seed of the price walk and book sizes; none means a fresh seed at every start.
    seed: int | None = None
    #: Added to every request, standing in for the round trip to a real exchange.
    latency_ms: float = 0.0
    #: Replace listed fee schedules, as maker/taker fractions: "binance=0.001/0.001,kraken=0.0016/0.0026".
    fee_overrides: str = ""
    #: Multiply how much a broker's books hold: "alpaca=0.05,kraken=2".
    depth_overrides: str = ""
    #: Serve these brokers' own REST dialects too (services/emulators), for the live ccxt venues:
    #: "binance,kraken" (a free port each) or "binance=8081,kraken=8082". Loopback only.
    emulate: str = ""
    #: Where the emulators' bound ports are written, as JSON {broker: port}, once they listen.
    emulator_ports_file: str = ""
    #: The emulators answer over-limit bursts with 429s, as the exchanges do (off only for load
    #: tests that must not wait for an exchange's real pace).
    emulator_rate_limits: bool = True

    def __post_init__(self) -> None:
        if self.tick_interval_s <= 0:
            raise ConfigError(f"tick_interval_s must be > 0, got {self.tick_interval_s}")
        if self.volatility_bps < 0:
            raise ConfigError(f"volatility_bps must be >= 0, got {self.volatility_bps}")
        if self.latency_ms < 0:
            raise ConfigError(f"latency_ms must be >= 0, got {self.latency_ms}")
        # Parsed here so a malformed override fails at start, not when the engine is built.
        self.fee_schedules()
        self.depth_multipliers()
        self.emulator_ports()

    def emulator_ports(self) -> dict[str, int]:
        """`emulate` as {broker: port} (0: any free port)."""
        out: dict[str, int] = {}
        for item in self.emulate.split(","):
            broker, sep, port = (part.strip() for part in item.partition("="))
            if not broker:
                continue
            if broker not in BROKER_PROFILES:
                raise ConfigError(f"emulate: unknown broker {broker!r}; known: {', '.join(BROKER_PROFILES)}")
            if broker in out:
                raise ConfigError(f"emulate: {broker} is given twice")
            if sep and not (port.isdigit() and 0 <= int(port) <= 65535):
                raise ConfigError(f"emulate: {broker}: port must be 0..65535, got {port!r}")
            out[broker] = int(port) if sep else 0
        return out

    def fee_schedules(self) -> dict[str, FeeSchedule]:
        """`fee_overrides` as {broker: FeeSchedule}."""
        out = {}
        for broker, value in _broker_values("fee_overrides", self.fee_overrides).items():
            maker, sep, taker = value.partition("/")
            if not sep:
                raise ConfigError(f"fee_overrides: {broker}: expected maker/taker, got {value!r}")
            fees = FeeSchedule(
                maker=_decimal("fee_overrides", f"{broker} maker", maker),
                taker=_decimal("fee_overrides", f"{broker} taker", taker),
            )
            if problem := check_fee_schedule(fees):
                raise ConfigError(f"fee_overrides: {broker}: {problem}")
            out[broker] = fees
        return out

    def depth_multipliers(self) -> dict[str, Decimal]:
        """`depth_overrides` as {broker: multiplier}."""
        out = {}
        for broker, value in _broker_values("depth_overrides", self.depth_overrides).items():
            multiplier = _decimal("depth_overrides", broker, value)
            if problem := check_depth_multiplier(multiplier):
                raise ConfigError(f"depth_overrides: {broker}: {problem}")
            out[broker] = multiplier
        return out


def _broker_values(name: str, text: str) -> dict[str, str]:
    """Split `broker=value,broker=value`: each broker known and named once; blank items are skipped."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        broker, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not value:
            raise ConfigError(f"{name}: expected broker=value, got {item.strip()!r}")
        if broker not in BROKER_PROFILES:
            raise ConfigError(f"{name}: unknown broker {broker!r}; known: {', '.join(BROKER_PROFILES)}")
        if broker in out:
            raise ConfigError(f"{name}: {broker} is given twice")
        out[broker] = value
    return out


def _decimal(name: str, field: str, text: str) -> Decimal:
    try:
        return parse_decimal(text.strip(), field)
    except BadDecimal as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _wall_clock() -> datetime:
    return datetime.now(timezone.utc)


class App:
    service_names = (SERVICE_NAME,)
    # The exchange stands outside the mesh: it shows up in a signal's trace, but starts none of
    # its own (the executors' book refreshes would bury everything else).
    traces_only_continued = True

    def __init__(self, config: Config) -> None:
        self.config = config
        seed = config.seed if config.seed is not None else secrets.randbits(64)
        # Ids carry a per-start session so a restarted exchange never hands out a trade id twice
        # (the aggregator deduplicates fills by it), even with a fixed seed.
        self.session = secrets.token_hex(4)
        self.exchange = SimExchange(
            rng=random.Random(seed),
            clock=_wall_clock,
            volatility_bps=config.volatility_bps,
            session=self.session,
            fee_overrides=config.fee_schedules(),
            depth_overrides=config.depth_multipliers(),
        )
        self.network = Network(latency_s=config.latency_ms / 1000)
        self.servicer = SimulatedExchangeServicer(self.exchange, self.network)
        self._seed = seed
        self._ticker: asyncio.Task[None] | None = None
        #: broker -> the running HTTP emulator of that exchange's own API
        self.emulators: dict[str, EmulatorServer] = {}

    def register(self, server: grpc.aio.Server) -> None:
        simexchange_pb2_grpc.add_SimulatedExchangeServiceServicer_to_server(self.servicer, server)

    async def start(self, health: Health) -> None:
        log.info(
            "simexchange config",
            extra={"config": dataclasses.asdict(self.config), "seed": self._seed, "session": self.session},
        )
        self._ticker = asyncio.create_task(self._tick_loop(), name="simexchange-ticks")
        try:
            for broker, port in self.config.emulator_ports().items():
                buckets = Buckets(enabled=self.config.emulator_rate_limits)
                exchange = Exchange(broker, self.exchange, self.network, buckets=buckets)
                self.emulators[broker] = await EmulatorServer(dialect(broker), exchange, port=port).start()
        except BaseException:
            await self.stop()
            raise
        if self.config.emulator_ports_file:
            ports = {broker: server.port for broker, server in self.emulators.items()}
            write_atomically(self.config.emulator_ports_file, json.dumps(ports))

    async def stop(self) -> None:
        emulators, self.emulators = self.emulators, {}
        for server in emulators.values():
            await server.stop()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    async def _tick_loop(self) -> None:
        # Paced by the loop's monotonic clock so ticks keep their rate whatever the wall clock does;
        # the engine gets wall time only to stamp books and fills.
        loop = asyncio.get_running_loop()
        interval = self.config.tick_interval_s
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                self.exchange.tick(_wall_clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("simexchange tick failed")
            # After a stall, skip the missed ticks rather than firing them back to back.
            next_at = max(next_at + interval, loop.time())


def build_app(config: Config, security: object = None) -> App:
    """`security` is ignored: the simulated exchanges stand in for the real ones, which live
    outside the mesh and have their own API keys."""
    return App(config)
