"""Smart routing through the whole in-process mesh: live inputs, failover, splitting, balancing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from decimal import Decimal

import grpc
import pytest
from nija.common.v1 import common_pb2
from nija.router.v1 import router_pb2
from nija.simexchange.v1 import simexchange_pb2

from services.runtime.wire import status_name
from tests.harness import signal, start_mesh


def info_calls(mesh) -> int:
    return sum(s.app.servicer.info_calls for n, s in mesh.servers.items() if n.startswith("executor-"))


async def quote(mesh, pb) -> router_pb2.QuoteRouteResponse:
    return await mesh.router.QuoteRoute(router_pb2.QuoteRouteRequest(signal=pb), timeout=5)


async def wait_route(mesh, pb, predicate, timeout_s: float = 5.0) -> float:
    """Seconds until QuoteRoute's first choice satisfies `predicate`."""
    started = time.monotonic()
    while True:
        response = await quote(mesh, pb)
        if predicate(response):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"route did not change in {timeout_s}s: {response.route.broker}")
        await asyncio.sleep(0.02)


async def set_fault(mesh, broker, mode=simexchange_pb2.FAULT_MODE_NONE, latency_ms=0):
    await mesh.sim.SetFault(simexchange_pb2.SetFaultRequest(broker=broker, mode=mode, latency_ms=latency_ms), timeout=5)


async def test_latency_change_moves_the_route_within_a_second_without_info_rpcs(mesh):
    pb = signal(signal_id="lat-1", usd="250")
    assert (await quote(mesh, pb)).route.broker == "binance"
    calls_before = info_calls(mesh)
    for i in range(20):
        updates = await mesh.submit(signal(signal_id=f"lat-warm-{i}", usd="50"))
        assert status_name(updates[-1].status) == "filled"
    assert info_calls(mesh) == calls_before  # 20 signals, not one info request among them

    await set_fault(mesh, "binance", latency_ms=400)  # binance's measured latency climbs
    elapsed = await wait_route(mesh, pb, lambda r: r.route.broker != "binance")
    print(f"\nroute left binance {elapsed * 1000:.0f} ms after its latency rose")
    # This includes the executor measuring slower round trips (each takes the added 400 ms);
    # how fast a change reaches the router is measured on its own in the queue-depth test.
    assert elapsed < 2.0
    binance = next(b for b in (await quote(mesh, pb)).brokers if b.broker == "binance")
    assert binance.score.latency < 70  # 400 ms -> latency score 60

    await set_fault(mesh, "binance")
    elapsed = await wait_route(mesh, pb, lambda r: r.route.broker == "binance", timeout_s=10)
    print(f"route back on binance after {elapsed * 1000:.0f} ms")
    assert info_calls(mesh) == calls_before


async def test_queue_depth_change_moves_the_route(tmp_path):
    # Binance's executor runs one order at a time from a queue of 20; its worker is held, so
    # orders routed there wait in the queue and its load score falls.
    # The best route only (no load balancing among near-equal brokers): the first order must go
    # to binance, the top score, for its queue to fill.
    mesh = await start_mesh(tmp_path, executor={"concurrency": "1", "max_queue_size": "20"},
                            router={"balancing": "best"})
    try:
        engine = mesh.servers["executor-binance"].app.engine
        gate = asyncio.Event()
        venue = engine._venue
        real_create = venue.create_order

        async def held(account, order):
            await gate.wait()
            return await real_create(account, order)

        venue.create_order = held
        pb = signal(signal_id="q-probe", usd="100")
        directory = mesh.servers["router"].app.directory
        # How long one change (an order entering binance's queue) takes to reach the router.
        first = asyncio.create_task(mesh.submit(signal(signal_id="q-first", usd="100")))
        waited = time.monotonic()
        while engine.snapshot().active_executions + engine.snapshot().queue_depth < 1:
            assert time.monotonic() - waited < 10, "the first order never reached binance's executor"
            await asyncio.sleep(0.001)
        changed_at = time.monotonic()
        assert await directory.wait_for(lambda: directory.info("binance").active_executions >= 1, 5.0)
        propagation = time.monotonic() - changed_at
        print(f"\nexecutor change reached the router in {propagation * 1000:.1f} ms")
        assert propagation < 1.0
        orders = [first]
        started = time.monotonic()
        for i in range(20):
            orders.append(asyncio.create_task(mesh.submit(signal(signal_id=f"q-{i}", usd="100"))))
            await asyncio.sleep(0.05)
            moved = await quote(mesh, pb)
            if moved.route.broker != "binance":
                break
        binance = next(b for b in moved.brokers if b.broker == "binance")
        depth = engine.snapshot().queue_depth
        print(f"\nroute left binance after {len(orders)} orders, queue depth {depth}, load score {binance.score.load:.0f}, "
              f"{(time.monotonic() - started) * 1000:.0f} ms")
        assert moved.route.broker != "binance"
        assert depth >= 1 and binance.score.load < 100  # the pushed queue depth is what moved it
        gate.set()
        results = await asyncio.gather(*orders)
        assert [status_name(r[-1].status) for r in results] == ["filled"] * len(results)
    finally:
        await mesh.stop()


async def _submit_stream(mesh, count: int, gap_s: float, prefix: str) -> list[list[common_pb2.ExecutionUpdate]]:
    # Market orders (exits): each fills at once, so an executor winding down never has to cancel
    # a limit order still resting on a slow machine (which it does, as CANCELLED, by design).
    async def one(i):
        await asyncio.sleep(i * gap_s)
        return await mesh.submit(signal(signal_id=f"{prefix}-{i}", usd="120", kind=common_pb2.SIGNAL_TYPE_EXIT))

    return await asyncio.gather(*(one(i) for i in range(count)))


async def test_stopped_executor_is_routed_around_with_no_client_failures_and_comes_back(mesh):
    pb = signal(signal_id="stop-probe", usd="120")
    binance = mesh.servers["executor-binance"]
    port = binance.port
    traffic = asyncio.create_task(_submit_stream(mesh, 40, 0.025, "stop"))
    await asyncio.sleep(0.3)
    # What SIGTERM does: NOT_SERVING at once, in-flight orders finish within the grace, then stop.
    stopping = asyncio.create_task(binance.stop(2.0))
    elapsed = await wait_route(mesh, pb, lambda r: r.route.broker != "binance")
    excluded = next(b for b in (await quote(mesh, pb)).brokers if b.broker == "binance")
    print(f"\nbinance excluded {elapsed * 1000:.0f} ms after it began to stop: {excluded.exclusion}")
    assert elapsed < 1.0 and not excluded.eligible
    await stopping
    # Replaced on the same port, as a rollout does. An order still running when the grace ran out
    # (a loaded machine) is reconciled from the journal by the new executor, which ends its stream.
    await mesh.restart_executor("binance", port)
    restarted_at = time.monotonic()
    results = await traffic
    assert [status_name(r[-1].status) for r in results] == ["filled"] * 40  # zero client-visible failures
    brokers = Counter(next(u.broker for u in reversed(r) if u.broker) for r in results)
    print(f"final brokers {dict(brokers)}")
    assert sum(v for k, v in brokers.items() if k != "binance") > 0

    # Readmitted without touching the router.
    await wait_route(mesh, pb, lambda r: next(b.eligible for b in r.brokers if b.broker == "binance"), timeout_s=10)
    print(f"binance readmitted {(time.monotonic() - restarted_at) * 1000:.0f} ms after restart")
    # Readmitted means routable again: a signal that only binance may take goes there.
    only_binance = signal(signal_id="after-restart", pair="BNB-USD", usd="120")
    updates = await mesh.submit(only_binance)
    assert updates[1].broker == "binance" and status_name(updates[-1].status) == "filled"


async def test_open_breaker_is_routed_around_with_no_client_failures(mesh):
    pb = signal(signal_id="brk-probe", usd="120")
    traffic = asyncio.create_task(_submit_stream(mesh, 40, 0.025, "brk"))
    await asyncio.sleep(0.3)
    await set_fault(mesh, "binance", mode=simexchange_pb2.FAULT_MODE_UNAVAILABLE)
    elapsed = await wait_route(mesh, pb, lambda r: r.route.broker != "binance")
    opened = await wait_route(
        mesh, pb, lambda r: "unhealthy" in next(b.exclusion for b in r.brokers if b.broker == "binance")
    )
    print(f"\nbinance excluded {elapsed * 1000:.0f} ms after its exchange went down; "
          f"breaker open and NOT_SERVING {(elapsed + opened) * 1000:.0f} ms after")
    assert elapsed < 1.0 and elapsed + opened < 1.0
    assert mesh.servers["executor-binance"].app.engine.breaker.state.value == "open"
    await asyncio.sleep(0.5)
    await set_fault(mesh, "binance")  # the outage ends; an order caught mid-send is resolved by id
    results = await traffic
    statuses = [status_name(r[-1].status) for r in results]
    assert statuses == ["filled"] * 40, [(r[-1].broker, status_name(r[-1].status), r[-1].reason) for r in results]
    handed_back = [r for r in results if sum(1 for u in r if status_name(u.status) == "routing") > 1]
    print(f"{len(handed_back)} signals failed over after binance refused or handed them back")

    breaker = mesh.servers["executor-binance"].app.engine.breaker
    breaker.open_seconds = 0.2  # (60 s by default) then HALF_OPEN, a probe, CLOSED
    elapsed = await wait_route(
        mesh, pb, lambda r: next(b.eligible for b in r.brokers if b.broker == "binance"), timeout_s=10
    )
    print(f"binance eligible again {elapsed * 1000:.0f} ms after its breaker's open period")


async def test_thin_book_order_splits_across_venues_and_costs_less_than_any_single_venue(tmp_path):
    mesh = await start_mesh(tmp_path, sim={"depth_overrides": "binance=0.05"})
    try:
        pb = signal(signal_id="split-1", usd="30000")
        pb.routing.allow_split = True
        q = await quote(mesh, pb)
        singles = {b.broker: Decimal(b.cost.total_usd) for b in q.brokers if b.eligible}
        assert "binance" not in singles  # too thin for $30k on its own
        assert q.route.broker == "split" and len(q.route.legs) >= 2
        split_cost = Decimal(q.route.estimated_cost)
        print(f"\nsplit {[(l.broker, l.size_usd) for l in q.route.legs]} all-in ${split_cost:.2f}; "
              f"single venues {({b: f'{c:.2f}' for b, c in singles.items()})}")
        assert split_cost < min(singles.values())

        updates = await mesh.submit(pb, timeout=60)
        parent = [u for u in updates if u.signal_id == "split-1"]
        children = [u for u in updates if u.parent_signal_id == "split-1"]
        assert status_name(parent[-1].status) == "filled", [(u.signal_id, status_name(u.status), u.reason) for u in updates]
        filled_on = {u.broker for u in children if u.fills}
        assert len(filled_on) >= 2
        fills = [f for u in children for f in u.fills]
        assert Decimal(parent[-1].filled_quantity) == sum(Decimal(f.quantity) for f in fills)
        assert Decimal(parent[-1].fees_total) == sum(Decimal(f.fee) for f in fills)
        notional = sum(Decimal(f.price) * Decimal(f.quantity) for f in fills)
        # Quantities are sized at the touch, so market slices walking the book spend a little more.
        assert Decimal("29000") < notional <= Decimal("30030")
        order_rows = mesh.ledger_rows("SELECT signal_id, status FROM orders ORDER BY signal_id")
        assert ("split-1", "filled") in order_rows and sum(1 for r in order_rows if r[0].startswith("split-1.")) >= 2
    finally:
        await mesh.stop()


async def test_quote_route_explains_every_broker(mesh):
    response = await quote(mesh, signal(user="bob", pair="XMR-USD", usd="300", signal_id="q-1"))
    by_broker = {b.broker: b for b in response.brokers}
    assert response.routable and response.route.broker == "kraken"  # XMR only on kraken
    assert by_broker["kraken"].eligible and by_broker["kraken"].score.total > 0
    assert Decimal(by_broker["kraken"].cost.total_usd) > 0
    assert "not listed" in by_broker["coinbase"].exclusion
    assert set(by_broker) == {"coinbase", "kraken"}  # bob's brokers only
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await quote(mesh, signal(usd="NaN"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert mesh.ledger_rows("SELECT count(*) FROM orders") == [(0,)]  # a dry run writes nothing


async def test_cost_policy_and_preferences_come_from_the_user(mesh):
    # bob prefers kraken; dave routes by all-in cost with at most 50 bps slippage.
    bob = await quote(mesh, signal(user="bob", pair="BTC-USD", usd="500", signal_id="p-1"))
    assert bob.route.broker == "kraken"
    dave = await quote(mesh, signal(user="dave", pair="BTC-USD", usd="500", signal_id="p-2"))
    assert dave.route.policy == common_pb2.ROUTING_POLICY_COST
    eligible = [b for b in dave.brokers if b.eligible]
    assert dave.route.broker == min(eligible, key=lambda b: Decimal(b.cost.total_usd)).broker
