"""The exchange emulators for tests: a simexchange server on port 0 serving the chosen brokers'
REST dialects too, with helpers to issue API keys and to reach the engine and the network."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import aiohttp

from services.emulators.base import ApiKey
from services.domain.ids import client_order_id
from services.executor.venues.base import Account
from services.executor.venues.live import adapter
from services.runtime.server import Listen, RunningServer
from services.simexchange.app import App, Config, build_app


async def issue_key(url: str, account_id: str) -> ApiKey:
    """A key issued the way a user gets one: from the exchange at `url` (its admin path)."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/emulator/keys", json={"account_id": account_id}) as resp:
            resp.raise_for_status()
            body = await resp.json()
    return ApiKey(body["api_key"], body["secret"], body["account_id"])


@dataclasses.dataclass
class Emulated:
    running: RunningServer

    @property
    def app(self) -> App:
        return self.running.app  # type: ignore[return-value]

    def url(self, broker: str) -> str:
        return self.app.emulators[broker].url

    async def issue_key(self, broker: str, account_id: str) -> ApiKey:
        return await issue_key(self.url(broker), account_id)

    async def account(self, broker: str, user_id: str, account_id: str | None = None) -> Account:
        """An Account carrying a freshly issued key for `account_id` (default: the user id)."""
        key = await self.issue_key(broker, account_id or user_id)
        return Account(user_id=user_id, account_id=key.account_id, api_key=key.api_key, api_secret=key.secret)


@contextlib.asynccontextmanager
async def emulated(
    *brokers: str, seed: int = 11, tick_interval_s: float = 0.05, rate_limits: bool = True
) -> AsyncIterator[Emulated]:
    config = Config(
        seed=seed, tick_interval_s=tick_interval_s, emulate=",".join(brokers), emulator_rate_limits=rate_limits
    )
    running = await RunningServer(build_app(config), Listen(port=0)).start()
    try:
        yield Emulated(running)
    finally:
        await running.stop(0)


def venue_client_order_id(broker: str, user_id: str, signal_id: str, leg: int = 0) -> str:
    """The client order id the exchange holds for an order: the mesh's, in the exchange's form."""
    mesh_id = client_order_id(user_id, signal_id, broker, leg)
    to_venue = getattr(adapter(broker), "venue_client_order_id", None)
    return to_venue(mesh_id) if to_venue else mesh_id
