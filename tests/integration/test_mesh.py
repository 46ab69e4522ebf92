"""The whole mesh in one process (real servers on port 0, real channels): a signal end to end."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2
from nija.router.v1 import router_pb2
from nija.simexchange.v1 import simexchange_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.domain.scoring import rank_brokers
from services.router.directory import snapshot_from_info
from services.runtime.errors import reason_of
from services.runtime.wire import signal_from_pb, status_name
from tests.harness import signal, spent_about, start_mesh


async def infos(mesh):
    return {b: (await stub.GetExecutorInfo(executor_pb2.GetExecutorInfoRequest(), timeout=5)).info
            for b, stub in mesh.executors.items()}


async def expected_broker(mesh, pb, candidates):
    snaps = {b: snapshot_from_info(b, info, healthy=True) for b, info in (await infos(mesh)).items()}
    ranked, _ = rank_brokers(signal_from_pb(pb), candidates, snaps, lambda b, p: None)
    return ranked[0].broker, ranked


def check_fill_fees(update, info):
    rates = {common_pb2.LIQUIDITY_MAKER: Decimal(info.maker_fee), common_pb2.LIQUIDITY_TAKER: Decimal(info.taker_fee)}
    for fill in update.fills:
        expected = Decimal(fill.price) * Decimal(fill.quantity) * rates[fill.liquidity]
        assert abs(Decimal(fill.fee) - expected) <= Decimal("1e-12"), (fill, expected)


async def test_signal_streams_to_filled_each_update_persisted_before_the_caller_sees_it(mesh):
    pb = signal(signal_id="e2e-1", usd="250")
    best, _ = await expected_broker(mesh, pb, ["coinbase", "kraken", "binance", "alpaca"])
    updates = []
    async for response in mesh.router.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=30):
        update = response.update
        rows = mesh.ledger_rows("SELECT body FROM updates WHERE user_id=? AND sequence=?", "alice", update.sequence)
        assert len(rows) == 1, f"update {update.sequence} was not persisted before it was streamed"
        assert common_pb2.ExecutionUpdate.FromString(rows[0][0]) == update
        updates.append(update)

    statuses = [status_name(u.status) for u in updates]
    assert statuses[:4] == ["pending", "routing", "queued", "executing"]
    assert statuses[-1] == "filled"
    assert [u.sequence for u in updates] == list(range(updates[0].sequence, updates[0].sequence + len(updates)))
    routing = updates[1]
    assert routing.broker == best == "binance"  # lowest fees, all else equal on an idle mesh
    assert routing.route.execution_method == common_pb2.EXECUTION_METHOD_LIMIT
    assert routing.route.priority == 3
    assert Decimal(routing.route.estimated_fees) == Decimal("0.25")  # 250 * 0.10% maker
    assert routing.route.reason.startswith("Score: ")

    final = updates[-1]
    fills = [f for u in updates for f in u.fills]
    assert fills and all(u.broker == best for u in updates[1:])
    info = (await infos(mesh))[best]
    for u in updates:
        check_fill_fees(u, info)
    assert Decimal(final.filled_quantity) == sum(Decimal(f.quantity) for f in fills)
    assert Decimal(final.fees_total) == sum(Decimal(f.fee) for f in fills)
    assert spent_about(final.filled_notional, 250)
    order = (await mesh.aggregator.GetOrder(aggregator_pb2.GetOrderRequest(user_id="alice", signal_id="e2e-1"))).order
    assert order.status == common_pb2.EXECUTION_STATUS_FILLED
    assert order.filled_quantity == final.filled_quantity


async def test_route_is_the_best_among_the_users_brokers(mesh):
    pb = signal(user="bob", pair="ETH-USD", usd="1000", signal_id="bob-1")  # bob: coinbase + kraken only
    best, ranked = await expected_broker(mesh, pb, ["coinbase", "kraken"])
    assert best == "kraken"
    updates = await mesh.submit(pb)
    assert updates[1].broker == "kraken"
    assert status_name(updates[-1].status) == "filled"
    check_fill_fees(updates[-1], (await infos(mesh))["kraken"])


async def test_stop_loss_is_a_market_order_with_taker_fees(mesh):
    pb = signal(pair="SOL-USD", side=common_pb2.SIDE_SELL, usd="400", kind=common_pb2.SIGNAL_TYPE_STOP_LOSS,
                signal_id="sl-1")
    updates = await mesh.submit(pb)
    assert updates[1].route.execution_method == common_pb2.EXECUTION_METHOD_MARKET
    assert updates[1].route.priority == 1
    assert status_name(updates[-1].status) == "filled"
    fills = [f for u in updates for f in u.fills]
    assert fills and all(f.liquidity == common_pb2.LIQUIDITY_TAKER for f in fills)
    info = (await infos(mesh))[updates[1].broker]
    for u in updates:
        check_fill_fees(u, info)


async def test_large_order_is_sliced_twap(mesh):
    updates = await mesh.submit(signal(usd="12000", signal_id="twap-1"), timeout=60)
    statuses = [status_name(u.status) for u in updates]
    assert updates[1].route.execution_method == common_pb2.EXECUTION_METHOD_TWAP
    assert statuses.count("executing") == 3  # ceil(12000 / 5000) slices
    assert statuses[-1] == "filled"
    client_ids = {u.client_order_id for u in updates if status_name(u.status) == "executing"}
    assert len(client_ids) == 3
    assert Decimal(updates[-1].filled_notional) > Decimal("11900")


async def test_same_signal_id_twice_yields_one_order(mesh):
    pb = signal(signal_id="dup-1", pair="ETH-USD", usd="300")
    first = await mesh.submit(pb)
    second = await mesh.submit(pb)
    assert [u.sequence for u in second] == [u.sequence for u in first]
    assert mesh.ledger_rows("SELECT count(*) FROM orders WHERE signal_id='dup-1'") == [(1,)]
    assert mesh.ledger_rows("SELECT count(*) FROM updates WHERE signal_id='dup-1' AND status='executing'") == [(1,)]
    cid = next(u.client_order_id for u in first if u.client_order_id)
    venue = await mesh.sim.GetOrder(simexchange_pb2.GetOrderRequest(
        broker=first[1].broker, account_id="alice", client_order_id=cid))
    assert Decimal(venue.order.filled_quantity) == Decimal(first[-1].filled_quantity)


async def test_concurrent_duplicates_yield_one_order(mesh):
    pb = signal(signal_id="dup-2", pair="BTC-USD", usd="200")
    results = await asyncio.gather(*(mesh.submit(pb) for _ in range(5)))
    assert all(status_name(r[-1].status) == "filled" for r in results)
    assert len({tuple(u.sequence for u in r) for r in results}) == 1
    assert mesh.ledger_rows("SELECT count(*) FROM orders WHERE signal_id='dup-2'") == [(1,)]
    assert mesh.ledger_rows("SELECT count(*) FROM updates WHERE signal_id='dup-2' AND status='executing'") == [(1,)]


async def test_same_signal_id_with_other_contents_is_refused(mesh):
    await mesh.submit(signal(signal_id="dup-3", usd="100"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.submit(signal(signal_id="dup-3", usd="101"))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(info.value) == "SIGNAL_ID_REUSED"


BAD = [
    (dict(usd="0"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIZE_USD"),
    (dict(usd="-5"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIZE_USD"),
    (dict(usd="NaN"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIZE_USD"),
    (dict(usd="Infinity"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIZE_USD"),
    (dict(usd="abc"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIZE_USD"),
    (dict(usd=""), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIZE_USD"),
    (dict(pair="NOPE-USD"), grpc.StatusCode.NOT_FOUND, "UNKNOWN_PAIR"),
    (dict(pair="btcusd"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_PAIR"),
    (dict(pair=""), grpc.StatusCode.INVALID_ARGUMENT, "BAD_PAIR"),
    (dict(user="nobody"), grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND"),
    (dict(user=""), grpc.StatusCode.INVALID_ARGUMENT, "BAD_USER_ID"),
    (dict(user="carol"), grpc.StatusCode.FAILED_PRECONDITION, "USER_DISABLED"),
    (dict(signal_id=""), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIGNAL_ID"),
    (dict(side=common_pb2.SIDE_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIDE"),
    (dict(side=7), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIDE"),
    (dict(kind=common_pb2.SIGNAL_TYPE_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIGNAL_TYPE"),
    (dict(limit_price="-1"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_LIMIT_PRICE"),
    (dict(limit_price="1e3"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_LIMIT_PRICE"),
    (dict(on_expiry=9), grpc.StatusCode.INVALID_ARGUMENT, "BAD_ON_EXPIRY"),
    (dict(limit_expiry_s=10**7), grpc.StatusCode.INVALID_ARGUMENT, "BAD_LIMIT_EXPIRY_S"),
    (dict(user="dave", pair="SOL-USD"), grpc.StatusCode.PERMISSION_DENIED, "PAIR_NOT_ALLOWED"),
    (dict(user="bob", usd="6000"), grpc.StatusCode.PERMISSION_DENIED, "SIZE_ABOVE_MAX"),
]


@pytest.mark.parametrize("fields,code,reason", BAD, ids=[r for _, _, r in BAD])
async def test_bad_input_gets_the_right_status_and_nothing_is_persisted(mesh, fields, code, reason):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await mesh.submit(signal(**{"signal_id": "bad-1", **fields}), timeout=10)
    assert info.value.code() == code
    assert reason_of(info.value) == reason
    assert info.value.details()
    assert mesh.ledger_rows("SELECT count(*) FROM orders") == [(0,)]
    assert mesh.ledger_rows("SELECT count(*) FROM updates") == [(0,)]


async def test_missing_signal_message_is_invalid(mesh):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in mesh.router.SubmitSignal(router_pb2.SubmitSignalRequest(), timeout=5):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(info.value) == "MISSING_SIGNAL"


async def test_executor_info_reports_fees_pairs_and_health(mesh):
    all_info = await infos(mesh)
    fees = {b: (i.maker_fee, i.taker_fee) for b, i in all_info.items()}
    assert fees == {"binance": ("0.001", "0.001"), "kraken": ("0.0016", "0.0026"),
                    "coinbase": ("0.006", "0.012"), "alpaca": ("0.0015", "0.0025")}
    pair_sets = {b: frozenset(p.pair for p in i.pairs) for b, i in all_info.items()}
    assert len(set(pair_sets.values())) == 4  # every broker lists a different set
    for info in all_info.values():
        assert info.breaker_state == common_pb2.BREAKER_STATE_CLOSED
        assert info.max_queue_size == 1000 and info.success_rate == 1.0
        assert info.avg_latency_ms > 0
        for p in info.pairs:
            assert Decimal(p.best_bid) < Decimal(p.best_ask)
            assert Decimal(p.ask_liquidity_usd) > 0


async def test_every_server_reports_serving_for_overall_and_its_name(mesh):
    for name, server in mesh.servers.items():
        channel = mesh.channel(name)
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", *server.app.service_names):
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, (name, service)


async def test_cancel_signal_stops_a_resting_order(tmp_path):
    # Limit orders priced well under the touch rest on the book until cancelled.
    m = await start_mesh(tmp_path, executor={"limit_offset_bps": "-200", "limit_timeout_s": "60"})
    try:
        pb = signal(signal_id="cancel-1", pair="ETH-USD", usd="300")
        call = m.router.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=30)
        seen = []
        async for response in call:
            seen.append(status_name(response.update.status))
            if seen[-1] == "executing":
                break
        response = await m.router.CancelSignal(
            router_pb2.CancelSignalRequest(user_id="alice", signal_id="cancel-1", reason="test"), timeout=5)
        assert len(response.brokers) == 1
        async for update in call:
            seen.append(status_name(update.update.status))
        assert seen[-1] == "cancelled"
        order = (await m.aggregator.GetOrder(aggregator_pb2.GetOrderRequest(user_id="alice", signal_id="cancel-1"))).order
        assert order.status == common_pb2.EXECUTION_STATUS_CANCELLED and order.filled_quantity in ("", "0")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await m.router.CancelSignal(router_pb2.CancelSignalRequest(user_id="alice", signal_id="cancel-1"), timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and reason_of(info.value) == "ORDER_FINISHED"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await m.router.CancelSignal(router_pb2.CancelSignalRequest(user_id="alice", signal_id="nope"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await m.stop()
