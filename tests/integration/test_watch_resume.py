"""Resuming a user's update stream by sequence (issue 6, acceptance 1): a watcher cut off 50
times at random points of a 5,000-update run ends with every update exactly once, in order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.aggregator.v1 import aggregator_pb2_grpc
from nija.common.v1 import common_pb2 as c

from services.aggregator.app import build_app
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from tests.ledger_db import ledger_config
from tests.principals import authenticate, channel_as

ORDERS = 1000  # x 5 updates each: pending, routing, queued, executing, filled
UPDATES = ORDERS * 5
DISCONNECTS = 50


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[RunningServer]:
    config = ledger_config(database_url)
    running = await RunningServer(build_app(config, Security(), authenticate), Listen(port=0)).start()
    yield running
    await running.stop(0)


async def _write(ledger: aggregator_pb2_grpc.AggregatorServiceStub, order: int) -> None:
    signal_id = f"r-{order}"
    await ledger.CreateOrder(a.CreateOrderRequest(signal=c.TradeSignal(
        signal_id=signal_id, user_id="alice", pair="BTC-USD", side=c.SIDE_BUY, size_usd="100",
        signal_type=c.SIGNAL_TYPE_ENTRY)))
    for status, name in ((c.EXECUTION_STATUS_ROUTING, "routing"), (c.EXECUTION_STATUS_QUEUED, "queued"),
                         (c.EXECUTION_STATUS_EXECUTING, "executing")):
        await ledger.RecordUpdate(a.RecordUpdateRequest(update=c.ExecutionUpdate(
            signal_id=signal_id, user_id="alice", status=status, broker="kraken", update_id=f"{signal_id}:{name}")))
    await ledger.RecordUpdate(a.RecordUpdateRequest(update=c.ExecutionUpdate(
        signal_id=signal_id, user_id="alice", status=c.EXECUTION_STATUS_FILLED, broker="kraken",
        update_id=f"{signal_id}:filled",
        fills=[c.Fill(venue_trade_id=f"t-{order}", price="50000", quantity="0.002", fee="0.1", fee_currency="USD")])))


async def test_a_watcher_cut_off_50_times_resumes_by_sequence_and_sees_every_update_once_in_order(server):
    rng = random.Random(6)
    # Cut points spread over the run: after this many updates received (in total) the call is cancelled.
    cuts = sorted(rng.sample(range(1, UPDATES), DISCONNECTS))
    seen: list[int] = []
    resumed = 0

    async def writers() -> None:
        async with channel_as(server.target, "router") as channel:
            ledger = aggregator_pb2_grpc.AggregatorServiceStub(channel)
            queue = iter(range(ORDERS))

            async def writer() -> None:
                for order in queue:
                    await _write(ledger, order)

            await asyncio.gather(*(writer() for _ in range(8)))

    async def watcher() -> None:
        nonlocal resumed
        async with channel_as(server.target, "alice") as channel:
            stub = aggregator_pb2_grpc.AggregatorServiceStub(channel)
            while len(seen) < UPDATES:
                after = seen[-1] if seen else 0
                call = stub.WatchUpdates(a.WatchUpdatesRequest(user_id="alice", after_sequence=after), timeout=60)
                try:
                    async for response in call:
                        seen.append(response.update.sequence)
                        if cuts and len(seen) >= cuts[0]:
                            cuts.pop(0)
                            call.cancel()  # the client drops the connection mid-stream
                            break
                        if len(seen) == UPDATES:
                            call.cancel()
                            break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.CANCELLED, exc
                resumed += 1
                # Away for a moment: the next call first replays what was written meanwhile, then
                # switches to live updates.
                await asyncio.sleep(rng.uniform(0, 0.03))

    await asyncio.wait_for(asyncio.gather(writers(), watcher()), 120)
    assert seen == list(range(1, UPDATES + 1))  # every update exactly once, in order
    assert resumed >= DISCONNECTS
