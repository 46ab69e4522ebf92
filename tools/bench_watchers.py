"""Does a watcher that never reads slow anybody else down? (issue 6, acceptance 4)

One aggregator (a real grpc.aio server on port 0, SQLite ledger in a temp dir). Writers record
orders for ten users while ten watchers, one per user, follow their user's updates live. The same
load runs without and with an extra watcher on one of those users that opens its stream and
never reads it (a fixed 64 KiB window, so the server's sends stop almost at once), alternating
A B A B in one run. Printed: the writers' throughput and the other watchers' delivery latency in
each round, and the ratio with/without.

    .venv/bin/python tools/bench_watchers.py [--orders 600] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.aggregator.v1 import aggregator_pb2_grpc
from nija.common.v1 import common_pb2 as c

from services.aggregator.app import Config, build_app
from services.runtime.auth import Principal, PrincipalKind, token_interceptors
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer

USERS = [f"u{i}" for i in range(10)]
_PRINCIPALS = {"bench-router": Principal(PrincipalKind.SERVICE, "router")}


async def _authenticate(token: str) -> Principal | None:
    return _PRINCIPALS.get(token)


def _channel(target: str, **options: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=list(options.items()), interceptors=token_interceptors("bench-router"))


async def _round(
    target: str, tag: str, orders: int, slow: bool, last_sequence: dict[str, int]
) -> tuple[float, list[float]]:
    """Writes `orders` orders (5 updates each) spread over the users; returns writer throughput
    (updates/s) and the watchers' delivery latencies (s)."""
    sent_at: dict[str, float] = {}  # update_id -> when its RecordUpdate was sent
    latencies: list[float] = []
    expected = {u: 0 for u in USERS}
    for i in range(orders):
        expected[USERS[i % len(USERS)]] += 5
    channel = _channel(target)
    stub = aggregator_pb2_grpc.AggregatorServiceStub(channel)
    slow_channel = _channel(target, **{"grpc.http2.bdp_probe": 0})
    slow_call = None
    if slow:
        slow_call = aggregator_pb2_grpc.AggregatorServiceStub(slow_channel).WatchUpdates(
            a.WatchUpdatesRequest(user_id=USERS[0], after_sequence=0)
        )
        # Started and never read.
        await slow_call.initial_metadata()

    async def watch(user: str, after: int) -> None:
        seen = 0
        async for response in stub.WatchUpdates(a.WatchUpdatesRequest(user_id=user, after_sequence=after)):
            u = response.update
            now = time.perf_counter()
            if u.update_id in sent_at:  # (a PENDING update is written by CreateOrder: not timed)
                latencies.append(now - sent_at[u.update_id])
            last_sequence[user] = u.sequence
            seen += 1
            if seen == expected[user]:
                return

    # Each watcher follows from its user's last sequence so far: live updates only.
    watchers = [asyncio.create_task(watch(user, last_sequence[user])) for user in USERS]

    queue = iter(range(orders))

    async def writer() -> None:
        for i in queue:
            user, signal_id = USERS[i % len(USERS)], f"{tag}-{i}"
            await stub.CreateOrder(a.CreateOrderRequest(signal=c.TradeSignal(
                signal_id=signal_id, user_id=user, pair="BTC-USD", side=c.SIDE_BUY, size_usd="100",
                signal_type=c.SIGNAL_TYPE_ENTRY)))
            for status, name in ((c.EXECUTION_STATUS_ROUTING, "routing"), (c.EXECUTION_STATUS_QUEUED, "queued"),
                                 (c.EXECUTION_STATUS_EXECUTING, "executing"), (c.EXECUTION_STATUS_FILLED, "filled")):
                update = c.ExecutionUpdate(signal_id=signal_id, user_id=user, status=status, broker="kraken",
                                           update_id=f"{signal_id}:{name}")
                if status == c.EXECUTION_STATUS_FILLED:
                    update.fills.add(venue_trade_id=f"{tag}-t{i}", price="50000", quantity="0.002", fee="0.1",
                                     fee_currency="USD")
                sent_at[update.update_id] = time.perf_counter()
                await stub.RecordUpdate(a.RecordUpdateRequest(update=update))

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(16)))
    elapsed = time.perf_counter() - started
    await asyncio.wait_for(asyncio.gather(*watchers), 60)
    if slow_call is not None:
        slow_call.cancel()
    await channel.close()
    await slow_channel.close()
    return orders * 4 / elapsed, latencies


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(orders: int, rounds: int) -> None:
    # No permission service here: its feed of fills would only log its retries.
    logging.getLogger("services.aggregator.position_feed").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(database_path=str(Path(tmp) / "aggregator.db"), watcher_buffer=1000)
        server = await RunningServer(build_app(config, Security(), _authenticate), Listen(port=0)).start()
        try:
            last_sequence = {u: 0 for u in USERS}
            await _round(server.target, "warm", orders // 4, False, last_sequence)
            results: dict[bool, list[tuple[float, list[float]]]] = {False: [], True: []}
            for r in range(rounds):
                for slow in (False, True):
                    throughput, latencies = await _round(server.target, f"r{r}{int(slow)}", orders, slow, last_sequence)
                    results[slow].append((throughput, latencies))
                    print(f"round {r + 1} {'with' if slow else 'without'} a non-reading watcher: "
                          f"{throughput:,.0f} updates/s written; others' delivery p50 {_p(latencies, .5) * 1000:.2f} ms "
                          f"p99 {_p(latencies, .99) * 1000:.2f} ms")
            base = statistics.mean(t for t, _ in results[False])
            slow = statistics.mean(t for t, _ in results[True])
            base_p99 = statistics.mean(_p(lat, .99) for _, lat in results[False])
            slow_p99 = statistics.mean(_p(lat, .99) for _, lat in results[True])
            print(f"\nthroughput with / without: {slow / base:.3f} ({(1 - slow / base) * 100:+.1f}% slower); "
                  f"others' p99 delivery with / without: {slow_p99 / base_p99:.3f}")
        finally:
            await server.stop(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.rounds))
