"""What every exchange emulator shares: API keys, rate-limit buckets, the fault gate, the server.

A dialect module (binance.py, kraken.py, ...) defines `DIALECT`, which knows one exchange's paths,
JSON, signatures and error answers; everything else is here:

- `KeyRing`: the API keys the emulator issued, by key; each names the engine account it trades.
- `Buckets`: token buckets per (limit, principal), the way an exchange counts request weight per
  key or per IP; a dialect answers an empty bucket with its own 429.
- `EmulatorServer`: the aiohttp server. Every exchange path first takes the network's trip
  (`services.simexchange.network`): a fault that strikes is answered by the dialect's `refuse`
  before the engine sees the request. A handler that executed an order whose answer the network
  loses raises `LostResponse`: the connection is dropped without an answer, exactly what a client
  sees when a response is lost on the way back.
- `POST /emulator/keys {"account_id": ...}` issues a key for an account (loopback only; a test and
  development tool).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timezone
from typing import Any, Protocol

from aiohttp import web

from services.domain.rate_limits import KeyedBuckets
from services.simexchange.core import SimExchange
from services.simexchange.network import Network, Strike

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/emulator/"


@dataclasses.dataclass(frozen=True)
class ApiKey:
    api_key: str
    #: What the client signs with (for Coinbase, a PEM private key); shown once, when issued.
    secret: str = dataclasses.field(repr=False)
    account_id: str = ""
    #: What the emulator verifies with, when that is not the secret itself (Coinbase's public key).
    verifier: Any = dataclasses.field(default=None, repr=False, compare=False)


class KeyRing:
    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}

    def add(self, key: ApiKey) -> ApiKey:
        self._keys[key.api_key] = key
        return key

    def get(self, api_key: str) -> ApiKey | None:
        return self._keys.get(api_key)


@dataclasses.dataclass(frozen=True)
class Limit:
    """A token bucket: `burst` cost units at once, refilled at `per_s` units per second."""

    burst: float
    per_s: float


class Buckets:
    """Token buckets per (limit name, principal): what an exchange counts per key or per IP."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, enabled: bool = True) -> None:
        #: Off only for load tests that must not wait for an exchange's real pace.
        self.enabled = enabled
        self._buckets = KeyedBuckets(clock)

    def take(self, name: str, principal: str, limit: Limit, cost: float = 1.0) -> float:
        """0.0 when the request may go ahead (its cost is taken); else the seconds until it could."""
        if not self.enabled:
            return 0.0
        return self._buckets.take((name, principal), limit.burst, limit.per_s, cost)


class LostResponse(Exception):
    """The engine executed the request; its answer is lost on the way back."""


@dataclasses.dataclass
class Exchange:
    """What a dialect's handlers work with: one broker of the engine, seen through the network."""

    broker: str
    engine: SimExchange
    network: Network
    keys: KeyRing = dataclasses.field(default_factory=KeyRing)
    buckets: Buckets = dataclasses.field(default_factory=Buckets)
    wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)

    def lose_response(self) -> None:
        """Call right after the engine executed an order: raises LostResponse when the fault says so."""
        if self.network.loses_response(self.broker):
            raise LostResponse


class Dialect(Protocol):
    broker: str

    def issue_key(self, account_id: str) -> ApiKey:
        """A new API key (and secret) for `account_id`, in the form this exchange hands out."""

    def routes(self, exchange: Exchange) -> Iterable[web.RouteDef]:
        """The exchange's REST paths, bound to `exchange`."""

    def refuse(self, strike: Strike, retry_after_s: float | None) -> web.StreamResponse:
        """How this exchange answers an outage, a 5xx or a 429 from its network edge."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")), status=status, content_type="application/json", headers=headers
    )


class EmulatorServer:
    def __init__(self, dialect: Dialect, exchange: Exchange, host: str = "127.0.0.1", port: int = 0) -> None:
        self.dialect = dialect
        self.exchange = exchange
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> EmulatorServer:
        app = web.Application(middlewares=[self._edge], client_max_size=64 * 1024)
        app.add_routes([web.post(f"{ADMIN_PREFIX}keys", self._issue_key)])
        app.add_routes(list(self.dialect.routes(self.exchange)))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("exchange emulator listening", extra={"broker": self.dialect.broker, "url": self.url})
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _edge(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX):
            return await handler(request)
        # The request is in before the trip's latency: a client that gives up meanwhile (timeout)
        # does not stop it from executing, exactly the unknown outcome a real timeout leaves.
        if request.body_exists:
            await request.read()
        strike = await self.exchange.network.trip(self.exchange.broker)
        if strike is not None:
            retry_ms = self.exchange.network.fault(self.exchange.broker).retry_after_ms
            retry_after = retry_ms / 1000 if strike is Strike.RATE_LIMITED and retry_ms else None
            return self.dialect.refuse(strike, retry_after)
        try:
            return await handler(request)
        except LostResponse:
            log.warning("exchange emulator response lost", extra={"broker": self.exchange.broker, "path": request.path})
            if request.transport is not None:
                request.transport.abort()
            # Nothing reaches the client; aiohttp discards what is written to an aborted transport.
            raise asyncio.CancelledError from None

    async def _issue_key(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            account_id = str(body["account_id"])
        except (ValueError, KeyError, TypeError):
            return json_response({"error": 'expected JSON {"account_id": "..."}'}, status=400)
        if not account_id:
            return json_response({"error": "account_id is required"}, status=400)
        key = self.issue_key(account_id)
        return json_response({"api_key": key.api_key, "secret": key.secret, "account_id": key.account_id})

    def issue_key(self, account_id: str) -> ApiKey:
        """A new key for `account_id`, in the exchange's form, valid from now on."""
        return self.exchange.keys.add(self.dialect.issue_key(account_id))
