"""Positions through the permission service's RPCs, as the aggregator's feed drives them (issue 5,
acceptance 5): partial fills, a sell that crosses zero, replays and duplicates, against figures
worked out by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from nija.common.v1 import common_pb2 as c
from nija.permission.v1 import permission_pb2 as pb
from nija.permission.v1 import permission_pb2_grpc

from services.permission.app import Config, build_app
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from tests.principals import authenticate, channel_as


@pytest.fixture
async def permission(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await RunningServer(
        build_app(Config(database_path=str(tmp_path / "permission.db")), Security(), authenticate), Listen(port=0)
    ).start()
    yield running
    await running.stop(0)


def _update(signal_id: str, side: int, status: int, fills: list[tuple[str, str, str, str]]) -> c.ExecutionUpdate:
    return c.ExecutionUpdate(
        signal_id=signal_id, user_id="alice", pair="BTC-USD", side=side, status=status, broker="binance",
        update_id=f"{signal_id}:{len(fills)}",
        fills=[c.Fill(venue_trade_id=t, price=p, quantity=q, fee=f, fee_currency="USD") for t, p, q, f in fills],
    )


BUY, SELL = c.SIDE_BUY, c.SIDE_SELL
PARTIAL, FILLED = c.EXECUTION_STATUS_PARTIAL_FILL, c.EXECUTION_STATUS_FILLED

SCRIPT = [
    # buy 0.5 @ 100, then 0.4 @ 102.5 in two partial fills: 0.9 BTC for 91 USD
    _update("b1", BUY, FILLED, [("t1", "100", "0.5", "0.05")]),
    _update("b2", BUY, PARTIAL, [("t2", "102.5", "0.1", "0.01")]),
    _update("b2", BUY, PARTIAL, [("t2", "102.5", "0.1", "0.01")]),  # the same fill again
    _update("b2", BUY, FILLED, [("t3", "102.5", "0.3", "0.03")]),
    # sell 0.3 @ 110: a third of the cost basis, 91 * 0.3 / 0.9 = 30.333333333333 (1e-12)
    _update("s1", SELL, FILLED, [("t4", "110", "0.3", "0.033")]),
    # sell 0.8 @ 105: closes the remaining 0.6, then opens a 0.2 short at 105
    _update("s2", SELL, FILLED, [("t5", "105", "0.8", "0.084")]),
    _update("s2", SELL, FILLED, [("t5", "105", "0.8", "0.084")]),  # the whole update replayed
]


async def test_positions_after_partial_fills_sells_and_duplicates_match_the_hand_computed_ledger(permission):
    async with channel_as(permission.target, "aggregator") as feed, channel_as(permission.target, "alice") as mine:
        applied = []
        stub = permission_pb2_grpc.PermissionServiceStub(feed)
        for update in SCRIPT:
            response = await stub.ApplyExecution(pb.ApplyExecutionRequest(update=update, broker="binance"))
            applied.append(response.new_fills)
        assert applied == [1, 1, 0, 1, 1, 1, 0]

        response = await permission_pb2_grpc.PermissionServiceStub(mine).GetPositions(pb.GetPositionsRequest(user_id="alice"))
    (position,) = response.positions
    # realized: (33 - 30.333333333333) + (0.6 * 105 - 60.666666666667) = 2.666666666667 + 2.333333333333
    assert position == pb.Position(
        pair="BTC-USD",
        quantity="-0.2",
        average_entry_price="105",
        cost_basis="-21",
        realized_pnl="5",
        fees="0.207",  # 0.05 + 0.01 + 0.03 + 0.033 + 0.084
    )
    # Cash in minus cash out equals realized P&L minus the open cost basis, exactly.
    assert (33 + 84) - (50 + 41) == 5 - (-21)
    assert response.today.traded_usd == "208"  # 50 + 41 + 33 + 84
    assert response.today.fees == "0.207"
    assert response.today.realized_pnl == "5"


# ApplyExecutions: the feed's batches (issue 10).


def _error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            (detail,) = status_pb2.Status.FromString(value).details
            info = error_details_pb2.ErrorInfo()
            assert detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo on {exc!r}")


def _batch(updates: list[c.ExecutionUpdate]) -> pb.ApplyExecutionsRequest:
    return pb.ApplyExecutionsRequest(executions=[pb.ApplyExecutionRequest(update=u, broker="binance") for u in updates])


async def _positions(permission: RunningServer) -> pb.GetPositionsResponse:
    async with channel_as(permission.target, "alice") as mine:
        return await permission_pb2_grpc.PermissionServiceStub(mine).GetPositions(pb.GetPositionsRequest(user_id="alice"))


async def test_a_batch_applies_every_fill_once_and_a_replayed_batch_applies_none(permission):
    async with channel_as(permission.target, "aggregator") as feed:
        stub = permission_pb2_grpc.PermissionServiceStub(feed)
        # The script's duplicates sit in the same batch: each fill still counts once.
        assert (await stub.ApplyExecutions(_batch(SCRIPT))).new_fills == 5
        assert (await stub.ApplyExecutions(_batch(SCRIPT))).new_fills == 0
    response = await _positions(permission)
    # The same figures as one ApplyExecution per update (the test above).
    (position,) = response.positions
    assert (position.quantity, position.cost_basis, position.realized_pnl, position.fees) == ("-0.2", "-21", "5", "0.207")
    assert response.today.traded_usd == "208"


async def test_a_batch_with_one_malformed_update_is_refused_whole_naming_its_index(permission):
    bad = c.ExecutionUpdate()
    bad.CopyFrom(SCRIPT[3])
    bad.fills[0].price = "-1"
    batch = [SCRIPT[0], SCRIPT[1], bad, SCRIPT[4]]
    async with channel_as(permission.target, "aggregator") as feed:
        stub = permission_pb2_grpc.PermissionServiceStub(feed)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ApplyExecutions(_batch(batch))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("executions[2]: ")
        info = _error_info(refused.value)
        assert info.reason == "BAD_FILL.PRICE" and info.metadata["index"] == "2"
        # Nothing of it was applied: not even the updates before the bad one.
        assert (await _positions(permission)).positions == []
        # Without it, the rest goes through, each fill once.
        assert (await stub.ApplyExecutions(_batch([SCRIPT[0], SCRIPT[1], SCRIPT[4]]))).new_fills == 3


@pytest.mark.parametrize(("size", "reason"), [(0, "EMPTY_BATCH"), (1001, "BATCH_TOO_LARGE")])
async def test_an_empty_or_oversized_batch_is_invalid(permission, size: int, reason: str):
    updates = [_update(f"x{i}", BUY, FILLED, [(f"tx{i}", "100", "0.001", "0")]) for i in range(size)]
    async with channel_as(permission.target, "aggregator") as feed:
        stub = permission_pb2_grpc.PermissionServiceStub(feed)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ApplyExecutions(_batch(updates))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _error_info(refused.value).reason == reason
        # The largest batch allowed goes through.
        if size > 1000:
            assert (await stub.ApplyExecutions(_batch(updates[:1000]))).new_fills == 1000


async def test_only_the_aggregator_applies_batches(permission):
    for who in ("router", "executor-binance", "admin", "alice"):
        async with channel_as(permission.target, who) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await permission_pb2_grpc.PermissionServiceStub(ch).ApplyExecutions(_batch(SCRIPT[:1]))
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, who
    assert (await _positions(permission)).positions == []
