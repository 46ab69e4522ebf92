"""Reservations and positions across the mesh: reserved by the router, turned into positions by
the aggregator's feed, released when a signal is refused or ends without trading."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import grpc
import pytest
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc

from services.runtime.errors import reason_of
from services.runtime.wire import status_name
from tests.harness import InProcessMesh, signal


async def _positions(mesh: InProcessMesh, user: str) -> permission_pb2.GetPositionsResponse:
    stub = permission_pb2_grpc.PermissionServiceStub(mesh.channel("permission", mesh.tokens.users[user]))
    return await stub.GetPositions(permission_pb2.GetPositionsRequest(user_id=user))


async def _until(probe, predicate, timeout_s: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if predicate(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def test_a_fill_becomes_a_position_and_closes_the_reservation(mesh: InProcessMesh) -> None:
    updates = await mesh.submit(signal(user="bob", pair="ETH-USD", usd="300", signal_id="pos-1"))
    assert status_name(updates[-1].status) == "filled"
    filled = Decimal(updates[-1].filled_quantity)
    settled = await _until(lambda: _positions(mesh, "bob"),
                           lambda r: r.positions and r.today.open_reservations == 0)
    (position,) = settled.positions
    assert position.pair == "ETH-USD" and Decimal(position.quantity) == filled
    assert Decimal(position.cost_basis) == Decimal(updates[-1].filled_notional)
    assert Decimal(settled.today.traded_usd) == Decimal(updates[-1].filled_notional)
    assert settled.today.reserved_usd == "0"


async def test_a_signal_refused_after_reserving_gives_the_reservation_back(mesh: InProcessMesh) -> None:
    # Far more than any book holds: permitted (under alice's max), then NO_ELIGIBLE_BROKER.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.submit(signal(user="alice", pair="DOGE-USD", usd="49000", signal_id="too-big"))
    assert reason_of(refused.value) == "NO_ELIGIBLE_BROKER"
    today = (await _positions(mesh, "alice")).today
    assert (today.open_reservations, today.reserved_usd) == (0, "0")


async def test_a_rejected_order_releases_its_reservation(mesh: InProcessMesh) -> None:
    # Under the exchange's minimum: the executor rejects it.
    updates = await mesh.submit(signal(user="alice", pair="BTC-USD", usd="0.5", signal_id="tiny"))
    assert status_name(updates[-1].status) == "rejected"
    today = (await _until(lambda: _positions(mesh, "alice"), lambda r: r.today.open_reservations == 0)).today
    assert (today.open_reservations, today.reserved_usd) == (0, "0")


async def test_limits_set_by_an_admin_apply_to_the_next_signal(mesh: InProcessMesh) -> None:
    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    await admin.SetLimits(permission_pb2.SetLimitsRequest(
        user_id="bob", limits=permission_pb2.RiskLimits(max_position_usd="500")))
    first = await mesh.submit(signal(user="bob", pair="ETH-USD", usd="400", signal_id="lim-1"))
    assert status_name(first[-1].status) == "filled"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.submit(signal(user="bob", pair="ETH-USD", usd="400", signal_id="lim-2"))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(refused.value) == "POSITION_LIMIT"
    assert "bob" in refused.value.details()
    # A sell reduces the exposure: always allowed.
    sell = await mesh.submit(signal(user="bob", pair="ETH-USD", usd="100", side=common_pb2.SIDE_SELL, signal_id="lim-3"))
    assert status_name(sell[-1].status) == "filled"


async def test_the_kill_switch_reaches_every_executor_and_is_the_denial_reason(mesh: InProcessMesh) -> None:
    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    await admin.SetKillSwitch(permission_pb2.SetKillSwitchRequest(user_id="bob", on=True, reason="margin call"))
    engines = [mesh.servers[f"executor-{b}"].app.engine for b in ("binance", "kraken", "coinbase", "alpaca")]
    deadline = time.monotonic() + 1.0
    while not all(e.kill_reason("bob") for e in engines):
        assert time.monotonic() < deadline, "an executor did not hear of the kill switch within 1 s"
        await asyncio.sleep(0.01)
    assert engines[0].kill_reason("alice") == ""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.submit(signal(user="bob", pair="ETH-USD", usd="50", signal_id="killed-1"))
    assert (refused.value.code(), reason_of(refused.value)) == (grpc.StatusCode.FAILED_PRECONDITION, "KILL_SWITCH")
    assert refused.value.details() == "kill switch is on for user bob: margin call"
    await admin.SetKillSwitch(permission_pb2.SetKillSwitchRequest(user_id="bob", on=False))
    while any(e.kill_reason("bob") for e in engines):
        await asyncio.sleep(0.01)
    after = await mesh.submit(signal(user="bob", pair="ETH-USD", usd="50", signal_id="revived-1"))
    assert status_name(after[-1].status) == "filled"


async def test_a_users_rate_limit_refusals_are_held_back_and_only_theirs(mesh: InProcessMesh) -> None:
    """Over the rate limit: refused as before, but each refusal holds the user's decision slot for
    rate_limited_hold_s (0.25 s) first, so a flooding client slows itself; another user's signal
    sent meanwhile is decided without waiting for them."""
    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    await admin.SetLimits(permission_pb2.SetLimitsRequest(
        user_id="bob", limits=permission_pb2.RiskLimits(trades_per_second="0.01", trade_burst=1)))

    async def timed(user: str, signal_id: str) -> tuple[str, float]:
        started = time.monotonic()
        try:
            updates = await mesh.submit(signal(user=user, pair="ETH-USD", usd="50", signal_id=signal_id))
            outcome = status_name(updates[-1].status)
        except grpc.aio.AioRpcError as exc:
            outcome = reason_of(exc)
        return outcome, time.monotonic() - started

    first = await timed("bob", "flood-0")
    assert first[0] == "filled"
    floods = [asyncio.create_task(timed("bob", f"flood-{i}")) for i in range(1, 4)]
    await asyncio.sleep(0.05)
    other, _ = await timed("alice", "not-held")
    refused = await asyncio.gather(*floods)
    assert other == "filled"
    assert [outcome for outcome, _ in refused] == ["USER_RATE_LIMITED"] * 3
    assert min(elapsed for _, elapsed in refused) >= 0.25  # held, never sooner
