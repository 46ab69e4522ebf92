"""Fairness with the real queue and the simulated exchange: one user's flood cannot starve another."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from services.domain.signal import ExecutionMethod, Side, Signal, SignalType
from services.domain.states import Status
from services.executor.engine import ExecutionConfig, ExecutorEngine
from services.executor.venues.sim import SimVenue
from services.runtime.config import load_config
from services.runtime.server import Listen, RunningServer
from services.runtime.wire import STATUS_FROM_PB
from services.simexchange import app as sim_app
from tests.fakes import MemoryLedger


async def test_a_flood_of_500_does_not_starve_another_users_5():
    sim = await RunningServer(sim_app.build_app(load_config(sim_app.Config, {"seed": "3"})), Listen(port=0)).start()
    venue = SimVenue("binance", sim.target)
    ledger = MemoryLedger()
    # The queue is under test, not Binance's 50-orders-per-10s account limit.
    engine = ExecutorEngine("binance", venue, ledger, ExecutionConfig(concurrency=4, rate_limits=False))
    try:
        await engine.load_markets()
        engine.start_workers()

        async def order(user: str, i: int) -> None:
            signal = Signal(f"{user}-{i}", user, "BTC-USD", Side.BUY, Decimal(20), SignalType.EXIT)
            async for _ in engine.execute(signal, ExecutionMethod.MARKET, 2):
                pass

        flood = [asyncio.create_task(order("user-a", i)) for i in range(500)]
        while sum(1 for u in ledger.updates if STATUS_FROM_PB[u.status] is Status.QUEUED) < 500:
            await asyncio.sleep(0.001)  # all of A's 500 are queued first...
        late = [asyncio.create_task(order("user-b", i)) for i in range(5)]  # ...then B sends 5
        await asyncio.gather(*flood, *late)

        finished = [u.signal_id for u in ledger.updates if STATUS_FROM_PB[u.status] is Status.FILLED]
        assert len(finished) == 505
        a_done = [sid for sid in finished if sid.startswith("user-a")]
        last_b = max(finished.index(f"user-b-{i}") for i in range(5))
        a_before_b = sum(1 for sid in finished[:last_b] if sid.startswith("user-a"))
        print(f"\nB's 5 orders all filled after {a_before_b} of A's (A's 50th: position {finished.index(a_done[49])})")
        assert last_b < finished.index(a_done[49])
    finally:
        await engine.stop()
        await venue.close()
        await sim.stop(0)
