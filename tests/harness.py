"""The whole mesh in one process: every service a real grpc.aio server on port 0, real channels.

Used by the integration tests; `tests/e2e` starts the same services as separate processes.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sqlite3
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
from services.runtime.config import load_config
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

    def channel(self, name: str) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(self.servers[name].target)
        self.channels.append(ch)
        return ch

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


async def _start(module: Any, values: dict[str, str]) -> RunningServer:
    config = load_config(module.Config, values)
    return await RunningServer(module.build_app(config), Listen(port=0)).start()


async def start_mesh(
    tmp: pathlib.Path,
    sim: dict[str, str] | None = None,
    executor: dict[str, str] | None = None,
    router: dict[str, str] | None = None,
) -> InProcessMesh:
    servers: dict[str, RunningServer] = {}
    # Fast ticks for quick tests, with calm prices so marketable limit orders do fill.
    servers["simexchange"] = await _start(sim_app, {"tick_interval_s": "0.05", "volatility_bps": "0.5", **(sim or {})})
    db = tmp / "aggregator.db"
    servers["aggregator"] = await _start(aggregator_app, {"database_path": str(db)})
    servers["permission"] = await _start(permission_app, {"database_path": str(tmp / "permission.db")})
    for broker in BROKERS:
        servers[f"executor-{broker}"] = await _start(
            executor_app,
            {
                "broker": broker,
                "simexchange_target": servers["simexchange"].target,
                "aggregator_target": servers["aggregator"].target,
                "journal_path": str(tmp / f"executor-{broker}.journal.db"),
                **FAST_EXECUTOR,
                **(executor or {}),
            },
        )
    router_settings = router
    servers["router"] = await _start(
        router_app,
        {
            "permission_target": servers["permission"].target,
            "aggregator_target": servers["aggregator"].target,
            "executor_targets": ",".join(f"{b}={servers['executor-' + b].target}" for b in BROKERS),
            "info_push_interval_ms": "200",
            # The seed's pure best-score choice, unless a test asks for load balancing.
            "balancing": "best",
            **(router_settings or {}),
        },
    )
    channels = [grpc.aio.insecure_channel(servers[n].target) for n in ("router", "aggregator", "simexchange")]
    executors = {}
    for broker in BROKERS:
        ch = grpc.aio.insecure_channel(servers[f"executor-{broker}"].target)
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


def signal(user: str = "alice", pair: str = "BTC-USD", side: int = common_pb2.SIDE_BUY, usd: str = "250",
           kind: int = common_pb2.SIGNAL_TYPE_ENTRY, signal_id: str = "sig-1", **fields: Any) -> common_pb2.TradeSignal:
    pb = common_pb2.TradeSignal(signal_id=signal_id, user_id=user, pair=pair, side=side, size_usd=usd,
                                signal_type=kind, strategy="test", **fields)
    pb.timestamp.GetCurrentTime()
    return pb
