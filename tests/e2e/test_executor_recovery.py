"""Crash recovery: kill -9 an executor process with 200 orders in flight (some filling on the
exchange while it is down), restart it, and every order ends in its true state, once."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import time
from decimal import Decimal

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2, executor_pb2_grpc
from nija.simexchange.v1 import simexchange_pb2, simexchange_pb2_grpc

from services.aggregator import app as aggregator_app
from services.domain.ids import client_order_id
from services.runtime.channels import open_channel
from services.runtime.config import load_config
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from services.simexchange import app as sim_app
from tests.harness import start_permission

pytestmark = pytest.mark.e2e

BIN = pathlib.Path(sys.executable).parent
ORDERS = 200
TERMINAL = {"filled", "cancelled", "failed", "rejected"}


def start_executor(
    tmp: pathlib.Path, sim: str, aggregator: str, permission: str, token: str
) -> tuple[subprocess.Popen[bytes], str]:
    port_file = tmp / "executor.port"
    port_file.unlink(missing_ok=True)
    settings = {
        "broker": "binance", "simexchange_target": sim, "aggregator_target": aggregator,
        "permission_target": permission,
        "journal_path": str(tmp / "journal.db"), "concurrency": "8", "info_refresh_s": "0.2",
        # Limit orders a little under the touch: some rest and fill on later ticks, some time out.
        "limit_offset_bps": "-1", "limit_timeout_s": "4",
    }
    cmd = [str(BIN / "nija"), "serve", "executor", "--port", "0", "--port-file", str(port_file)]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    log = open(tmp / "executor.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "NIJA_SERVICE_TOKEN": token})
    log.close()
    deadline = time.monotonic() + 30
    while not port_file.exists():
        assert process.poll() is None and time.monotonic() < deadline, (tmp / "executor.log").read_text()[-3000:]
        time.sleep(0.05)
    return process, f"127.0.0.1:{port_file.read_text()}"


async def test_kill_9_with_200_orders_in_flight_then_restart(tmp_path):
    sim = await RunningServer(
        sim_app.build_app(load_config(sim_app.Config, {"seed": "21", "tick_interval_s": "0.1", "latency_ms": "5"})),
        Listen(port=0),
    ).start()
    permission, tokens = await start_permission(tmp_path)
    ledger_db = tmp_path / "aggregator.db"
    aggregator_security = Security(token=tokens.services["aggregator"])
    aggregator = await RunningServer(
        aggregator_app.build_app(
            load_config(aggregator_app.Config, {"database_path": str(ledger_db), "permission_target": permission.target}),
            aggregator_security,
        ),
        Listen(port=0),
        aggregator_security,
    ).start()
    executor_token = tokens.services["executor-binance"]
    executor, target = start_executor(tmp_path, sim.target, aggregator.target, permission.target, executor_token)
    # The test plays the router's part.
    as_router = Security(token=tokens.services["router"])
    channels = [open_channel(aggregator.target, as_router), grpc.aio.insecure_channel(sim.target),
                open_channel(target, as_router)]
    ledger = aggregator_pb2_grpc.AggregatorServiceStub(channels[0])
    venue = simexchange_pb2_grpc.SimulatedExchangeServiceStub(channels[1])
    streams: list[asyncio.Task] = []
    try:
        executor_stub = executor_pb2_grpc.ExecutorServiceStub(channels[2])
        await asyncio.wait_for(channels[2].channel_ready(), 30)
        for _ in range(200):  # until its markets are loaded
            try:
                info = (await executor_stub.GetExecutorInfo(executor_pb2.GetExecutorInfoRequest(), timeout=2)).info
                if info.pairs and info.pairs[0].best_ask:
                    break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)

        async def place(i: int) -> None:
            pb = common_pb2.TradeSignal(signal_id=f"rec-{i}", user_id=f"user-{i % 7}", pair="BTC-USD",
                                        side=common_pb2.SIDE_BUY, size_usd="150",
                                        signal_type=common_pb2.SIGNAL_TYPE_ENTRY, strategy="recovery")
            await ledger.CreateOrder(aggregator_pb2.CreateOrderRequest(signal=pb), timeout=10)
            await ledger.RecordUpdate(aggregator_pb2.RecordUpdateRequest(update=common_pb2.ExecutionUpdate(
                signal_id=pb.signal_id, user_id=pb.user_id, status=common_pb2.EXECUTION_STATUS_ROUTING,
                broker="binance", update_id=f"{pb.signal_id}:routing:1")), timeout=10)
            route = common_pb2.RouteDecision(broker="binance", execution_method=common_pb2.EXECUTION_METHOD_LIMIT, priority=3)
            call = executor_stub.Execute(executor_pb2.ExecuteRequest(signal=pb, route=route), timeout=120)
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError:
                pass  # the executor is killed under it

        streams = [asyncio.create_task(place(i)) for i in range(ORDERS)]

        def count(status: str) -> int:
            return conn_count("SELECT count(DISTINCT signal_id) FROM updates WHERE status=?", status)

        def conn_count(sql: str, *args) -> int:
            import sqlite3
            with sqlite3.connect(f"file:{ledger_db}?mode=ro", uri=True) as conn:
                return conn.execute(sql, args).fetchone()[0]

        while count("executing") < 60:
            await asyncio.sleep(0.01)
        in_flight = ORDERS - conn_count("SELECT count(*) FROM orders WHERE status IN ('filled','cancelled','failed','rejected')")
        os.kill(executor.pid, signal.SIGKILL)
        executor.wait()
        killed_at = time.monotonic()
        await asyncio.sleep(1.5)  # the exchange keeps trading: resting orders fill while we are down
        executor, target = start_executor(tmp_path, sim.target, aggregator.target, permission.target, executor_token)

        deadline = time.monotonic() + 90
        while True:
            done = conn_count("SELECT count(*) FROM orders WHERE status IN ('filled','cancelled','failed','rejected')")
            created = conn_count("SELECT count(*) FROM orders")
            if done == created and created > 0:
                break
            assert time.monotonic() < deadline, f"{done} of {created} orders terminal after restart"
            await asyncio.sleep(0.2)
        print(f"\n{in_flight} orders in flight at kill -9; all {created} terminal "
              f"{time.monotonic() - killed_at:.1f}s after the kill")

        # Every order: the ledger agrees with the exchange, fill for fill; one venue order per signal.
        import sqlite3
        with sqlite3.connect(f"file:{ledger_db}?mode=ro", uri=True) as conn:
            orders = conn.execute("SELECT user_id, signal_id, status, filled_quantity FROM orders").fetchall()
            ledger_fills = dict(conn.execute("SELECT signal_id, count(*) FROM fills GROUP BY signal_id").fetchall())
        outcomes: dict[str, int] = {}
        for user_id, signal_id, status, filled in orders:
            outcomes[status] = outcomes.get(status, 0) + 1
            assert status in TERMINAL
            try:
                order = (await venue.GetOrder(simexchange_pb2.GetOrderRequest(
                    broker="binance", account_id=user_id,
                    client_order_id=client_order_id(user_id, signal_id, "binance", 0)), timeout=5)).order
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND and Decimal(filled) == 0, (signal_id, status)
                continue
            assert Decimal(order.filled_quantity) == Decimal(filled), (signal_id, status, order.filled_quantity, filled)
            assert len(order.fills) == ledger_fills.get(signal_id, 0), signal_id
            if status == "filled":
                assert order.state == simexchange_pb2.ORDER_STATE_FILLED
        print(f"outcomes {outcomes}")
        assert sum(outcomes.values()) == ORDERS
    finally:
        for task in streams:
            task.cancel()
        if executor.poll() is None:
            executor.send_signal(signal.SIGTERM)
            executor.wait(timeout=30)
        for channel in channels:
            await channel.close()
        await aggregator.stop(0)
        await permission.stop(0)
        await sim.stop(0)
