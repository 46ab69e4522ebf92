"""What does the ledger cost per recorded update? (issue 10)

One aggregator (a real grpc.aio server on port 0, SQLite ledger in a temp dir, webhooks outbox and
position feed running; the permission service replaced by an in-process no-op) and a writer in the
same process doing what the router and the executors do per market trade: CreateOrder, then
RecordUpdate for ROUTING, QUEUED, EXECUTING and FILLED (one fill), `--concurrency` trades at once.
The records go through `LedgerClient.record` either as unary RecordUpdate calls (`unary`) or over
one RecordUpdates stream (`stream`).

Printed per mode: CPU per ledger write (time.process_time of the whole process, client and
server, divided by the number of writes: 5 per trade), wall time, and the same per trade. CPU is
the figure to compare: the machine is shared, wall time is noisy. Run it before and after a change
to the ledger (`git stash` is not needed: the mode that a tree lacks is reported as such).

    .venv/bin/python tools/bench_ledger.py [--trades 400] [--concurrency 200] [--modes unary,stream]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from nija.common.v1 import common_pb2 as c

from services.aggregator.app import Config, build_app
from services.aggregator.client import LedgerClient
from services.aggregator.position_feed import PositionFeed
from services.runtime.auth import Principal, PrincipalKind
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer

WRITES_PER_TRADE = 5
_PRINCIPALS = {"bench-router": Principal(PrincipalKind.SERVICE, "router")}


async def _authenticate(token: str) -> Principal | None:
    return _PRINCIPALS.get(token)


async def _apply(_update: c.ExecutionUpdate) -> int:
    return 0


def _signal(tag: str, i: int) -> c.TradeSignal:
    return c.TradeSignal(
        signal_id=f"{tag}-{i}", user_id=f"u{i % 50}", pair="BTC-USD", side=c.SIDE_BUY, size_usd="100",
        signal_type=c.SIGNAL_TYPE_ENTRY,
    )


def _updates(signal: c.TradeSignal) -> list[c.ExecutionUpdate]:
    def one(status: int, name: str, **kw: object) -> c.ExecutionUpdate:
        return c.ExecutionUpdate(
            user_id=signal.user_id, signal_id=signal.signal_id, status=status,
            update_id=f"{signal.signal_id}:{name}", broker="kraken", **kw,
        )

    return [
        one(c.EXECUTION_STATUS_ROUTING, "routing", reason="routed to kraken"),
        one(c.EXECUTION_STATUS_QUEUED, "queued"),
        one(c.EXECUTION_STATUS_EXECUTING, "executing", order_quantity="0.002"),
        one(
            c.EXECUTION_STATUS_FILLED, "filled",
            fills=[c.Fill(venue_trade_id=f"{signal.signal_id}-t1", price="50000", quantity="0.002", fee="0.1")],
        ),
    ]


def _client(target: str, mode: str) -> LedgerClient | None:
    security = Security(token="bench-router")
    if "multiplex" in inspect.signature(LedgerClient).parameters:
        return LedgerClient(target, security, multiplex=(mode == "stream"))
    return LedgerClient(target, security) if mode == "unary" else None  # a tree without the stream


def _thread_cpu() -> dict[str, float]:
    """CPU seconds so far of each thread of this process, by Python thread name (the rest are
    gRPC's own threads)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    cpu: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "other (gRPC core)")
        name = "ledger-db" if name.startswith("ledger-db") else name
        cpu[name] = cpu.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return cpu


async def _run(target: str, mode: str, trades: int, concurrency: int) -> tuple[float, float, dict[str, float]] | None:
    client = _client(target, mode)
    if client is None:
        return None
    gate = asyncio.Semaphore(concurrency)

    async def trade(tag: str, i: int) -> None:
        async with gate:
            signal = _signal(tag, i)
            await client.create_order(signal)
            for update in _updates(signal):
                await client.record(update)

    try:
        await asyncio.gather(*(trade(f"warm-{mode}", i) for i in range(min(trades, concurrency))))
        gc.collect()
        cpu, wall, threads = time.process_time(), time.perf_counter(), _thread_cpu()
        await asyncio.gather(*(trade(mode, i) for i in range(trades)))
        spent = {name: seconds - threads.get(name, 0.0) for name, seconds in _thread_cpu().items()}
        return time.process_time() - cpu, time.perf_counter() - wall, spent
    finally:
        await client.close()


async def main(trades: int, concurrency: int, modes: list[str]) -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(database_path=str(Path(tmp) / "ledger.db"), permission_target="127.0.0.1:1")
        app = build_app(config, Security(), _authenticate)
        app.feed = PositionFeed(app.ledger, _apply)  # the permission service's side is not measured
        app.notifications._controls = None  # no kill switch stream to follow
        server = await RunningServer(app, Listen(port=0)).start()
        try:
            print(f"{trades} trades x {WRITES_PER_TRADE} ledger writes, concurrency {concurrency}")
            for mode in modes:
                result = await _run(server.target, mode, trades, concurrency)
                if result is None:
                    print(f"  {mode:6}: not supported by this tree")
                    continue
                cpu, wall, threads = result
                writes = trades * WRITES_PER_TRADE
                print(
                    f"  {mode:6}: {cpu / writes * 1e6:7.0f} us CPU per write, {cpu / trades * 1e3:6.2f} ms CPU"
                    f" per trade, {writes / wall:7.0f} writes/s wall"
                )
                by_thread = ", ".join(
                    f"{name} {seconds / writes * 1e6:.0f}" for name, seconds in sorted(threads.items(), key=lambda t: -t[1])
                    if seconds > 0
                )
                print(f"          per write by thread (us): {by_thread}")
        finally:
            await server.stop(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--modes", default="unary,stream")
    args = parser.parse_args()
    asyncio.run(main(args.trades, args.concurrency, args.modes.split(",")))
