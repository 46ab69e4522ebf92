"""kill -9 the aggregator during load, start it again on the same address (issue 6, acceptance 2):
no acknowledged update is lost, no sequence has a gap, no update is stored twice, and the
router and executors reconnect on their own."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.aggregator.backends import is_postgres
from services.domain.money import fmt
from services.domain.positions import Position, apply_fill
from services.domain.signal import Side
from services.runtime.channels import open_channel
from services.runtime.security import Security
from services.runtime.wire import status_name
from tests.harness import signal as trade_signal
from tests.harness import start_mesh, start_permission
from tests.ledger_db import rows

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
USERS = ("alice", "bob", "dave")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_aggregator(tmp: Path, port: int, permission: str, token: str, database: str) -> subprocess.Popen[bytes]:
    port_file = tmp / "aggregator.port"
    port_file.unlink(missing_ok=True)
    log = open(tmp / "aggregator.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [str(BIN / "nija"), "serve", "aggregator", "--port", str(port), "--port-file", str(port_file),
         "--set", f"database_path={tmp / 'aggregator.db'}", "--set", f"permission_target={permission}"],
        stdout=log, stderr=log,
        env={**os.environ, "NIJA_SERVICE_TOKEN": token, **({"NIJA_DATABASE_URL": database} if is_postgres(database) else {})},
    )
    log.close()
    deadline = time.monotonic() + 30
    while not port_file.exists():
        assert process.poll() is None and time.monotonic() < deadline, (tmp / "aggregator.log").read_text()[-2000:]
        time.sleep(0.05)
    return process


def _positions_from_ledger(ledger: str) -> dict[str, dict[str, tuple[str, ...]]]:
    fills = rows(
        ledger,
        "SELECT f.user_id, o.pair, o.side, f.price, f.quantity, f.fee FROM fills f"
        " JOIN orders o ON o.user_id = f.user_id AND o.signal_id = f.signal_id"
        " ORDER BY f.user_id, f.sequence, f.rowid",
    )
    positions: dict[str, dict[str, Position]] = {}
    for user, pair, side, price, quantity, fee in fills:
        mine = positions.setdefault(user, {})
        mine[pair], _ = apply_fill(mine.get(pair, Position(pair)), Side(side), Decimal(price), Decimal(quantity), Decimal(fee))
    return {
        user: {pair: (fmt(p.quantity), fmt(p.cost_basis), fmt(p.realized_pnl), fmt(p.fees)) for pair, p in mine.items()}
        for user, mine in positions.items()
    }


async def _positions_of(mesh, tokens) -> dict[str, dict[str, tuple[str, ...]]]:  # type: ignore[no-untyped-def]
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    stub = permission_pb2_grpc.PermissionServiceStub(mesh.channel("permission"))
    for user in USERS:
        response = await stub.GetPositions(permission_pb2.GetPositionsRequest(user_id=user))
        if response.positions:
            out[user] = {p.pair: (p.quantity, p.cost_basis, p.realized_pnl, p.fees) for p in response.positions}
    return out


async def test_kill_9_the_aggregator_under_load_loses_nothing_acknowledged(tmp_path: Path, database_url: str) -> None:
    """On SQLite (the aggregator's own file) and on PostgreSQL (NIJA_DATABASE_URL)."""
    ledger = database_url if is_postgres(database_url) else str(tmp_path / "aggregator.db")
    permission, tokens = await start_permission(tmp_path)
    port = _free_port()
    target = f"127.0.0.1:{port}"
    aggregator = _start_aggregator(tmp_path, port, permission.target, tokens.services["aggregator"], ledger)
    mesh = await start_mesh(tmp_path, permission=(permission, tokens), aggregator_target=target)
    acknowledged: list[common_pb2.ExecutionUpdate] = []
    outcomes: dict[str, int] = {}
    try:
        async def client(user: str, count: int) -> None:
            async with open_channel(mesh.servers["router"].target, Security(token=tokens.users[user])) as channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                rng = random.Random(user)
                for i in range(count):
                    pb = trade_signal(user=user, pair=rng.choice(["BTC-USD", "ETH-USD"]), usd="120",
                                      kind=common_pb2.SIGNAL_TYPE_EXIT, signal_id=f"{user}-crash-{i}")
                    mine: list[common_pb2.ExecutionUpdate] = []
                    try:
                        async for response in stub.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=60):
                            acknowledged.append(response.update)
                            mine.append(response.update)
                        outcome = status_name(mine[-1].status)
                    except grpc.aio.AioRpcError as exc:
                        outcome = f"{status_name(mine[-1].status) if mine else 'refused'}, then {exc.code().name}"
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1

        load = asyncio.gather(*(client(user, 60) for user in USERS))
        while len(acknowledged) < 150:
            await asyncio.sleep(0.01)
        aggregator.send_signal(signal.SIGKILL)
        aggregator.wait()
        killed_at = len(acknowledged)
        await asyncio.sleep(1.0)
        aggregator = _start_aggregator(tmp_path, port, permission.target, tokens.services["aggregator"], ledger)
        await asyncio.wait_for(load, 120)
        print(f"\n{killed_at} updates acknowledged before kill -9; {len(acknowledged)} in all; outcomes {outcomes}")

        # Reconnected on their own: the same router takes a new signal through to FILLED.
        after = await mesh.submit(trade_signal(user="alice", usd="120", kind=common_pb2.SIGNAL_TYPE_EXIT,
                                               signal_id="after-restart"))
        assert status_name(after[-1].status) == "filled"
        # Signals already under way when it died went on to FILLED (router and executors retried their
        # writes); those that arrived while it was down waited for it (or, past the router's deadline,
        # were refused before anything was written).
        assert set(outcomes) <= {"filled", "refused, then DEADLINE_EXCEEDED"} and outcomes.get("filled", 0) > 0

        stored = {(u, s): bytes(body) for u, s, body in rows(ledger, "SELECT user_id, sequence, body FROM updates")}
        (ids,) = rows(ledger, "SELECT count(*), count(DISTINCT user_id || '/' || update_id) FROM updates")
        # Nothing a client was told is missing, and it is stored exactly as told.
        for update in acknowledged:
            body = stored.get((update.user_id, update.sequence))
            assert body is not None, f"acknowledged update lost: {update.user_id} #{update.sequence}"
            assert common_pb2.ExecutionUpdate.FromString(body) == update
        # No gap and no duplicate in any user's sequence.
        for user in {u for u, _ in stored}:
            sequences = sorted(s for u, s in stored if u == user)
            assert sequences == list(range(1, len(sequences) + 1)), user
        assert ids[0] == ids[1]

        # The permission service's positions equal positions recomputed from the ledger's fills
        # (acceptance 6): every fill handed over exactly once, across the crash.
        expected = _positions_from_ledger(ledger)
        deadline = time.monotonic() + 20
        while (actual := await _positions_of(mesh, tokens)) != expected:
            assert time.monotonic() < deadline, (actual, expected)
            await asyncio.sleep(0.2)
        assert sum(len(p) for p in expected.values()) >= 3
    finally:
        await mesh.stop()
        if aggregator.poll() is None:
            aggregator.send_signal(signal.SIGTERM)
            aggregator.wait(timeout=30)
