"""The whole mesh in one process: every service a real grpc.aio server on port 0, real channels.

Used by the integration tests; `tests/e2e` starts the same services as separate processes.
Authentication is on, as in production: every service has its own token, and the test's own
stubs carry the admin token unless a test asks for a user's (`channel(name, token=...)`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sqlite3
from decimal import Decimal
from typing import Any

import grpc
from nija.aggregator.v1 import aggregator_pb2_grpc
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc
from nija.simexchange.v1 import simexchange_pb2_grpc

from services.aggregator import app as aggregator_app
from services.domain.brokers import BROKERS
from services.executor import app as executor_app
from services.permission import app as permission_app
from services.router import app as router_app
from services.permission.bootstrap import Issued, issue_mesh_tokens
from services.permission.demo import DEMO_USERS
from services.runtime.channels import open_channel
from services.runtime.config import load_config
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from services.simexchange import app as sim_app

# Fast loops for quick tests. Exchange rate limits are off here: these tests trade one demo
# user hard on purpose; the limits have their own tests (unit and executor level).
FAST_EXECUTOR = {"info_refresh_s": "0.05", "limit_timeout_s": "5", "twap_interval_s": "0.05", "rate_limits": "off"}


@dataclasses.dataclass
class InProcessMesh:
    servers: dict[str, RunningServer]
    channels: list[grpc.aio.Channel]
    aggregator_db: pathlib.Path
    router: router_pb2_grpc.RouterServiceStub
    aggregator: aggregator_pb2_grpc.AggregatorServiceStub
    sim: simexchange_pb2_grpc.SimulatedExchangeServiceStub
    executors: dict[str, executor_pb2_grpc.ExecutorServiceStub]
    tokens: Issued
    #: Each executor's settings, to start it again (`restart_executor`).
    executor_settings: dict[str, dict[str, str]]

    def channel(self, name: str, token: str | None = None) -> grpc.aio.Channel:
        """A channel to a service carrying `token` (default: the admin's)."""
        ch = open_channel(self.servers[name].target, Security(token=token or self.tokens.admin))
        self.channels.append(ch)
        return ch

    async def restart_executor(self, broker: str, port: int = 0) -> RunningServer:
        """Start `broker`'s executor again (after a test stopped it), on `port` if given."""
        name = f"executor-{broker}"
        config = load_config(executor_app.Config, self.executor_settings[broker])
        security = Security(token=self.tokens.services[name])
        server = RunningServer(executor_app.build_app(config, security), Listen(port=port), security)
        self.servers[name] = await server.start()
        return self.servers[name]

    async def submit(self, signal: common_pb2.TradeSignal, timeout: float = 30.0) -> list[common_pb2.ExecutionUpdate]:
        updates = []
        async for response in self.router.SubmitSignal(router_pb2.SubmitSignalRequest(signal=signal), timeout=timeout):
            updates.append(response.update)
        return updates

    def ledger_rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the aggregator's SQLite file directly, as a second process would."""
        with sqlite3.connect(f"file:{self.aggregator_db}?mode=ro", uri=True) as conn:
            return conn.execute(sql, params).fetchall()

    async def stop(self) -> None:
        for ch in self.channels:
            await ch.close()
        for name in ["router", *[f"executor-{b}" for b in BROKERS], "permission", "aggregator", "simexchange"]:
            if name in self.servers:
                await self.servers[name].stop(0)


CALLERS = ("router", "aggregator", *(f"executor-{b}" for b in BROKERS))


async def _start(module: Any, values: dict[str, str], token: str = "") -> RunningServer:
    config = load_config(module.Config, values)
    security = Security(token=token)
    return await RunningServer(module.build_app(config, security), Listen(port=0), security).start()


async def start_permission(tmp: pathlib.Path) -> tuple[RunningServer, Issued]:
    """The permission service alone, with every mesh service's token (and the admin's) minted."""
    permission_db = str(tmp / "permission.db")
    tokens = await issue_mesh_tokens(permission_db, CALLERS, [u.user_id for u in DEMO_USERS])
    return await _start(permission_app, {"database_path": permission_db}), tokens


async def start_mesh(
    tmp: pathlib.Path,
    sim: dict[str, str] | None = None,
    executor: dict[str, str] | None = None,
    router: dict[str, str] | None = None,
    permission: tuple[RunningServer, Issued] | None = None,
    aggregator_target: str | None = None,
    live: tuple[str, ...] = (),
) -> InProcessMesh:
    """`permission`: one the test started already (`start_permission`); `aggregator_target`: an
    aggregator the test runs itself (e.g. as a process it can kill), whose file is
    tmp/aggregator.db. `live`: brokers whose executors trade through ccxt against the exchange
    emulators (users need keys there: `issue_live_key`)."""
    servers: dict[str, RunningServer] = {}
    servers["permission"], tokens = permission or await start_permission(tmp)
    # Fast ticks for quick tests, with calm prices so marketable limit orders do fill.
    emulate = {"emulate": ",".join(live)} if live else {}
    servers["simexchange"] = await _start(
        sim_app, {"tick_interval_s": "0.05", "volatility_bps": "0.5", **emulate, **(sim or {})}
    )
    live_settings = {broker: await _live_settings(tmp, servers["simexchange"], broker) for broker in live}
    permission_target = servers["permission"].target
    db = tmp / "aggregator.db"
    if aggregator_target is None:
        servers["aggregator"] = await _start(
            aggregator_app, {"database_path": str(db), "permission_target": permission_target},
            tokens.services["aggregator"],
        )
        aggregator_target = servers["aggregator"].target
    executor_settings = {
        broker: {
            "broker": broker,
            "simexchange_target": servers["simexchange"].target,
            "aggregator_target": aggregator_target,
            "permission_target": permission_target,
            "journal_path": str(tmp / f"executor-{broker}.journal.db"),
            **FAST_EXECUTOR,
            **(executor or {}),
            **live_settings.get(broker, {}),
        }
        for broker in BROKERS
    }
    for broker in BROKERS:
        servers[f"executor-{broker}"] = await _start(
            executor_app, executor_settings[broker], tokens.services[f"executor-{broker}"]
        )
    router_settings = router
    servers["router"] = await _start(
        router_app,
        {
            "permission_target": permission_target,
            "aggregator_target": aggregator_target,
            "executor_targets": ",".join(f"{b}={servers['executor-' + b].target}" for b in BROKERS),
            "info_push_interval_ms": "200",
            # The seed's pure best-score choice, unless a test asks for load balancing.
            "balancing": "best",
            **(router_settings or {}),
        },
        tokens.services["router"],
    )
    admin = Security(token=tokens.admin)
    channels = [open_channel(servers["router"].target, admin), open_channel(aggregator_target, admin)]
    channels.append(grpc.aio.insecure_channel(servers["simexchange"].target))
    executors = {}
    for broker in BROKERS:
        # Executors answer only routers: the test speaks to them as the router does.
        ch = open_channel(servers[f"executor-{broker}"].target, Security(token=tokens.services["router"]))
        channels.append(ch)
        executors[broker] = executor_pb2_grpc.ExecutorServiceStub(ch)
    mesh = InProcessMesh(
        servers=servers,
        channels=channels,
        aggregator_db=db,
        router=router_pb2_grpc.RouterServiceStub(channels[0]),
        aggregator=aggregator_pb2_grpc.AggregatorServiceStub(channels[1]),
        sim=simexchange_pb2_grpc.SimulatedExchangeServiceStub(channels[2]),
        executors=executors,
        tokens=tokens,
        executor_settings=executor_settings,
    )
    # Ready when the router holds healthy info with books from every executor.
    directory = servers["router"].app.directory

    def ready() -> bool:
        snaps = directory.snapshots()
        return len(snaps) == len(BROKERS) and all(
            s.healthy and s.pairs and all(q.ask_usd > 0 for q in s.pairs.values()) for s in snaps.values()
        )

    if not await directory.wait_for(ready, 15.0):
        await mesh.stop()
        raise RuntimeError("mesh did not become ready")
    return mesh


async def _live_settings(tmp: pathlib.Path, sim: RunningServer, broker: str) -> dict[str, str]:
    """An executor on the live ccxt venue against `broker`'s emulator, with an operator key for
    the market reads an exchange signs (alpaca)."""
    url = sim.app.emulators[broker].url  # type: ignore[attr-defined]
    key = await issue_live_key(sim, broker, "market-data")
    keys_file = tmp / f"market-keys-{broker}.json"
    keys_file.write_text(json.dumps({"api_key": key[0], "api_secret": key[1]}))
    return {"venue": "ccxt", "exchange_url": url, "market_keys_file": str(keys_file)}


async def issue_live_key(sim: RunningServer, broker: str, account_id: str) -> tuple[str, str]:
    """(api_key, secret) issued by `broker`'s emulator for `account_id`, as a user gets them."""
    key = sim.app.emulators[broker].issue_key(account_id)  # type: ignore[attr-defined]
    return key.api_key, key.secret


def signal(user: str = "alice", pair: str = "BTC-USD", side: int = common_pb2.SIDE_BUY, usd: str = "250",
           kind: int = common_pb2.SIGNAL_TYPE_ENTRY, signal_id: str = "sig-1", **fields: Any) -> common_pb2.TradeSignal:
    pb = common_pb2.TradeSignal(signal_id=signal_id, user_id=user, pair=pair, side=side, size_usd=usd,
                                signal_type=kind, strategy="test", **fields)
    pb.timestamp.GetCurrentTime()
    return pb


#: How far a market order's spend may pass its dollar size. Its quantity is the size divided by the
#: quote at sizing time; the simulated price walks between that quote and the fill (2 bps a tick),
#: and a market order takes the book as it is then, so a buy can cost a few cents more than asked.
MARKET_SLIPPAGE = Decimal("0.005")


def spent_about(notional: str, usd: str | int) -> bool:
    """True when a filled market order's notional is its dollar size, give or take the market."""
    spent, size = Decimal(notional), Decimal(usd)
    return 0 < spent <= size * (1 + MARKET_SLIPPAGE)
