"""The dangerous fault: the exchange executes the order but the answer is lost. 1,000 orders with
30% of answers lost must give exactly 1,000 venue orders, each resolved to its true state."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
from nija.simexchange.v1 import simexchange_pb2, simexchange_pb2_grpc

from services.domain.ids import client_order_id
from services.domain.signal import ExecutionMethod, Side, Signal, SignalType
from services.domain.states import Status
from services.executor.engine import ExecutionConfig, ExecutorEngine
from services.executor.venues.sim import SimVenue
from services.runtime.config import load_config
from services.runtime.server import Listen, RunningServer
from services.runtime.wire import STATUS_FROM_PB
from services.simexchange import app as sim_app
from tests.fakes import MemoryLedger

ORDERS = 1000


async def test_lost_responses_never_duplicate_or_lose_an_order():
    sim = await RunningServer(sim_app.build_app(load_config(sim_app.Config, {"seed": "9"})), Listen(port=0)).start()
    venue = SimVenue("kraken", sim.target)
    ledger = MemoryLedger()
    engine = ExecutorEngine("kraken", venue, ledger, ExecutionConfig(concurrency=16, lookup_backoff_s=0.01, rate_limits=False))
    async with grpc.aio.insecure_channel(sim.target) as channel:
        faults = simexchange_pb2_grpc.SimulatedExchangeServiceStub(channel)
        try:
            await engine.load_markets()
            engine.start_workers()
            await faults.SetFault(simexchange_pb2.SetFaultRequest(
                broker="kraken", mode=simexchange_pb2.FAULT_MODE_NONE, lose_response_rate=0.3, seed=17))
            lookups = 0
            real_fetch = venue.fetch_order

            async def counted_fetch(*args):
                nonlocal lookups
                lookups += 1
                return await real_fetch(*args)

            venue.fetch_order = counted_fetch

            async def order(i: int) -> list:
                signal = Signal(f"amb-{i}", f"user-{i % 10}", "ETH-USD", Side.BUY, Decimal(40), SignalType.EXIT)
                return [u async for u in engine.execute(signal, ExecutionMethod.MARKET, 2)]

            results = await asyncio.gather(*(order(i) for i in range(ORDERS)))
            exchange = sim.app.exchange
            assert exchange.order_count("kraken") == ORDERS  # no order placed twice, none missing
            outcomes: dict[str, int] = {}
            for i, updates in enumerate(results):
                status = STATUS_FROM_PB[updates[-1].status]
                outcomes[status.value] = outcomes.get(status.value, 0) + 1
                user = f"user-{i % 10}"
                truth = exchange.get_order("kraken", user, client_order_id=client_order_id(user, f"amb-{i}", "kraken", 0))
                # The ledger tells the exchange's truth: filled quantity and every fill, once.
                assert Decimal(updates[-1].filled_quantity) == truth.filled_quantity
                fills = [f.venue_trade_id for u in updates for f in u.fills]
                assert sorted(fills) == sorted(f.trade_id for f in truth.fills)
                assert status is Status.FILLED or truth.filled_quantity < truth.quantity
            print(f"\n{ORDERS} orders, 30% of answers lost: {exchange.order_count('kraken')} venue orders; "
                  f"outcomes {outcomes}; {lookups} look-ups by client order id")
            assert 200 < lookups < 450  # about 300 answers were lost, each resolved by a look-up
        finally:
            await engine.stop()
            await venue.close()
            await sim.stop(0)
