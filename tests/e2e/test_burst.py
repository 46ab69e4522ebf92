"""The seed's burst against real processes: 1,000 signals at once for a pair three brokers list
with near-equal scores spread over all three under the default balancing; no queue overflows."""

from __future__ import annotations

import asyncio
import pathlib
import sys
import time
from collections import Counter

import pytest
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2, executor_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.runtime.channels import open_channel
from services.runtime.wire import status_name
from tests.e2e.up import UpMesh, start_up

pytestmark = pytest.mark.e2e

BIN = pathlib.Path(sys.executable).parent
# XRP-USD is listed on binance, kraken and coinbase; equal fees make their seed scores near-equal.
FEES = "binance=0.001/0.002,kraken=0.001/0.002,coinbase=0.001/0.002,alpaca=0.001/0.002"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    up = start_up(
        tmp_path_factory.mktemp("burst"),
        "--set", f"simexchange:fee_overrides={FEES}",
        # One demo user sends all 1,000: the exchanges' per-account order limits would make this
        # a test of Kraken's 60 orders a minute, not of the router's spread.
        *(arg for b in ("binance", "kraken", "coinbase", "alpaca") for arg in ("--set", f"executor-{b}:rate_limits=off")),
    )
    # ... and so would alice's own trade rate limit: lifted for this test, by an admin.
    lifted = up.nija("limits", "set", "--user", "alice", "--trades-per-second", "100000", "--burst", "2000")
    assert lifted.returncode == 0, lifted.stderr
    yield up
    up.stop()


async def _burst(mesh: UpMesh, count: int) -> tuple[list, dict[str, int]]:
    targets = mesh.targets
    peak = {b: 0 for b in ("binance", "kraken", "coinbase")}
    caps = {}

    async def watch(broker: str) -> None:
        async with open_channel(targets[f"executor-{broker}"], mesh.security()) as channel:  # as an operator
            stub = executor_pb2_grpc.ExecutorServiceStub(channel)
            async for response in stub.WatchExecutorInfo(executor_pb2.WatchExecutorInfoRequest(max_interval_ms=100)):
                peak[broker] = max(peak[broker], response.info.queue_depth)
                caps[broker] = response.info.max_queue_size

    watchers = [asyncio.create_task(watch(b)) for b in peak]
    async with open_channel(targets["router"], mesh.security("alice")) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)  # connected before the burst starts
        stub = router_pb2_grpc.RouterServiceStub(channel)
        probe = common_pb2.TradeSignal(signal_id="probe", user_id="alice", pair="XRP-USD", side=common_pb2.SIDE_BUY,
                                       size_usd="20", signal_type=common_pb2.SIGNAL_TYPE_ENTRY)
        for _ in range(100):  # the precondition: all three listed brokers eligible
            quote = await stub.QuoteRoute(router_pb2.QuoteRouteRequest(signal=probe), timeout=10)
            if sum(b.eligible for b in quote.brokers) == 3:
                break
            await asyncio.sleep(0.1)
        print("\nbefore the burst: " + "; ".join(
            f"{b.broker} {b.score.total:.1f} {b.exclusion}".strip() for b in quote.brokers))

        async def one(i: int) -> list[common_pb2.ExecutionUpdate]:
            pb = common_pb2.TradeSignal(signal_id=f"burst-{i}", user_id="alice", pair="XRP-USD",
                                        side=common_pb2.SIDE_BUY, size_usd="20",
                                        signal_type=common_pb2.SIGNAL_TYPE_ENTRY, strategy="burst")
            call = stub.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=180)
            return [r.update async for r in call]

        results = await asyncio.gather(*(one(i) for i in range(count)))
    for w in watchers:
        w.cancel()
    return results, {"peak": peak, "caps": caps}


def test_burst_of_1000_spreads_over_three_near_equal_brokers(mesh):
    started = time.monotonic()
    results, queues = asyncio.run(_burst(mesh, 1000))
    elapsed = time.monotonic() - started
    shares = Counter(r[1].broker for r in results)
    outcomes = Counter(status_name(r[-1].status) for r in results)
    print(f"\nburst of 1000 in {elapsed:.1f}s: shares {dict(shares)}; outcomes {dict(outcomes)}; "
          f"peak queue depth {queues['peak']} (caps {queues['caps']})")
    assert set(shares) == {"binance", "kraken", "coinbase"}
    assert all(n >= 100 for n in shares.values())
    assert all(queues["peak"][b] <= queues["caps"][b] for b in queues["peak"])
    # Every signal ends; nothing fails or is rejected (a burst that eats a book may leave a few
    # limit orders unfilled at their timeout: CANCELLED).
    assert set(outcomes) <= {"filled", "cancelled"} and outcomes["filled"] >= 900
