"""Positions through the permission service's RPCs, as the aggregator's feed drives them (issue 5,
acceptance 5): partial fills, a sell that crosses zero, replays and duplicates, against figures
worked out by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
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
