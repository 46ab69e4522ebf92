"""Routing decision latency: the pure decision in-process, and QuoteRoute through a real router.

    .venv/bin/python tools/bench_routing.py [--decisions 20000] [--rpcs 5000] [--concurrency 100]

Starts the mesh as real processes (`nija up --auto-ports`) for the RPC part and prints p50/p90/
p99/max for both. Targets (issue 3): p99 < 1 ms for the pure decision, < 5 ms through the RPC at
100 concurrent signals on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import random
import tempfile
import time
from decimal import Decimal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2, executor_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.bench.mesh import start_mesh
from services.bench.stats import percentiles
from services.domain.routing import Balancing, BalancingConfig, RoutingChoices, plan_route
from services.domain.signal import Side, Signal, SignalType
from services.router.directory import snapshot_from_info
from services.runtime.channels import open_channel
from services.runtime.security import Security

PAIRS = ["BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD", "LINK-USD", "AVAX-USD"]


async def live_snapshots(targets: dict[str, str], admin: Security) -> dict:
    """The executors' real info (books included), as the router holds it."""
    snaps = {}
    for name, target in targets.items():
        if name.startswith("executor-"):
            async with open_channel(target, admin) as channel:
                info = (await executor_pb2_grpc.ExecutorServiceStub(channel).GetExecutorInfo(
                    executor_pb2.GetExecutorInfoRequest(), timeout=5)).info
            snaps[info.broker] = snapshot_from_info(info.broker, info, healthy=True)
    return snaps


def bench_decision(snaps: dict, count: int) -> list[int]:
    rng = random.Random(1)
    samples = []
    brokers = sorted(snaps)
    for i in range(count):
        sig = Signal(f"b{i}", "alice", rng.choice(PAIRS), rng.choice([Side.BUY, Side.SELL]),
                     Decimal(rng.choice(["100", "250", "1000", "5000", "20000"])), SignalType.ENTRY)
        started = time.perf_counter_ns()
        plan_route(sig, brokers, snaps, lambda b, p: None, RoutingChoices(allow_split=i % 4 == 0),
                   BalancingConfig(Balancing.SCORE_WEIGHTED), rng)
        samples.append(time.perf_counter_ns() - started)
    return samples


async def bench_rpc(router: str, count: int, concurrency: int, alice: Security) -> list[int]:
    samples: list[int] = []
    async with open_channel(router, alice) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        counter = iter(range(count))

        async def worker() -> None:
            rng = random.Random()
            for i in counter:
                pb = common_pb2.TradeSignal(signal_id=f"q{i}", user_id="alice", pair=rng.choice(PAIRS),
                                            side=common_pb2.SIDE_BUY, size_usd="250",
                                            signal_type=common_pb2.SIGNAL_TYPE_ENTRY)
                started = time.perf_counter_ns()
                await stub.QuoteRoute(router_pb2.QuoteRouteRequest(signal=pb), timeout=10)
                samples.append(time.perf_counter_ns() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


async def bench_health(target: str, count: int, concurrency: int) -> list[int]:
    samples: list[int] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        counter = iter(range(count))

        async def worker() -> None:
            for _ in counter:
                started = time.perf_counter_ns()
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                samples.append(time.perf_counter_ns() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--rpcs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mesh = start_mesh(pathlib.Path(tmp), {})
        targets = mesh.targets
        alice = mesh.security("alice")
        try:
            snaps = asyncio.run(live_snapshots(targets, mesh.admin))
            bench_decision(snaps, 500)  # warm-up
            print(f"pure routing decision (4 brokers, live books, 1 in 4 with split planning):\n  "
                  f"{percentiles(bench_decision(snaps, args.decisions))}")
            floor = asyncio.run(bench_health(targets["router"], args.rpcs, args.concurrency))
            print(f"baseline: grpc.health Check on the same router process ({args.concurrency} concurrent), "
                  f"the floor of any RPC there:\n  {percentiles(floor)}")
            asyncio.run(bench_rpc(targets["router"], 500, args.concurrency, alice))  # warm-up
            started = time.monotonic()
            samples = asyncio.run(bench_rpc(targets["router"], args.rpcs, args.concurrency, alice))
            elapsed = time.monotonic() - started
            print(f"QuoteRoute through the router process ({args.concurrency} concurrent, token and permission "
                  f"check included):\n  {percentiles(samples)}  throughput {len(samples) / elapsed:.0f}/s")
        finally:
            mesh.stop()


if __name__ == "__main__":
    main()
