"""The breaker as the executor's gRPC health: transport failures open it, a probe closes it."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.simexchange.v1 import simexchange_pb2, simexchange_pb2_grpc

from services.domain.breaker import BreakerState
from services.executor import app as executor_app
from services.runtime.config import load_config
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from services.simexchange import app as sim_app
from tests.principals import authenticate

SERVICE = "nija.executor.v1.ExecutorService"


async def test_outage_opens_the_breaker_turns_not_serving_and_a_probe_closes_it(tmp_path):
    sim = await RunningServer(sim_app.build_app(load_config(sim_app.Config, {})), Listen(port=0)).start()
    config = load_config(executor_app.Config, {
        "broker": "binance", "simexchange_target": sim.target, "aggregator_target": "127.0.0.1:9",
        "info_refresh_s": "0.05", "breaker_open_s": "1.0", "rate_limits": "false", "journal_path": str(tmp_path / "journal.db"),
    })
    executor = await RunningServer(executor_app.build_app(config, Security(), authenticate), Listen(port=0)).start()
    try:
        await _scenario(executor, sim)
    finally:
        await executor.stop(0)
        await sim.stop(0)


async def _scenario(executor: RunningServer, sim: RunningServer) -> None:
    engine = executor.app.engine
    async with grpc.aio.insecure_channel(executor.target) as channel, grpc.aio.insecure_channel(sim.target) as sim_channel:
        health = health_pb2_grpc.HealthStub(channel)
        faults = simexchange_pb2_grpc.SimulatedExchangeServiceStub(sim_channel)
        statuses: list[int] = []

        async def watch() -> None:
            async for response in health.Watch(health_pb2.HealthCheckRequest(service=SERVICE)):
                statuses.append(response.status)

        watcher = asyncio.create_task(watch())

        async def until(predicate, timeout=5.0):
            loop = asyncio.get_running_loop()
            end = loop.time() + timeout
            while not predicate():
                assert loop.time() < end, "condition not reached"
                await asyncio.sleep(0.01)

        SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        await until(lambda: statuses and statuses[-1] == SERVING)
        assert engine.breaker.state is BreakerState.CLOSED

        transitions = []
        at: list[float] = []
        original = engine._record_transport

        def spy(ok: bool) -> None:
            before = engine.breaker.state
            original(ok)
            if engine.breaker.state is not before:
                transitions.append((before.value, engine.breaker.state.value, engine.breaker._failures))
                at.append(asyncio.get_running_loop().time())

        engine._record_transport = spy
        await faults.SetFault(simexchange_pb2.SetFaultRequest(broker="binance", mode=simexchange_pb2.FAULT_MODE_UNAVAILABLE))
        await until(lambda: statuses[-1] == NOT_SERVING)
        assert transitions[0] == ("closed", "open", 5)  # exactly at the threshold

        await faults.SetFault(simexchange_pb2.SetFaultRequest(broker="binance", mode=simexchange_pb2.FAULT_MODE_NONE))
        await until(lambda: statuses[-1] == SERVING)
        assert engine.breaker.state is BreakerState.CLOSED
        # The exchange is left alone while OPEN (not even book reads, whose first success would
        # close it at once); after the open period one probe closes it. Exactly-one-probe is
        # shown with an injected clock in tests/unit/test_domain_basics.py.
        assert transitions[-1] == ("half_open", "closed", 0)
        assert all(t[1] != "closed" for t in transitions[1:-1])
        assert at[-1] - at[0] >= engine.breaker.open_seconds
        watcher.cancel()
