"""ListOrders, ListFills and GetDailySummary over a real aggregator, and `nija ledger export`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.aggregator.v1 import aggregator_pb2_grpc
from nija.common.v1 import common_pb2 as c

from services import cli
from services.aggregator.app import Config, build_app
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from tests.integration.test_aggregator_service import (
    WAIT_S,
    create,
    error_info,
    lifecycle,
    record,
    refused,
    update,
)
from tests.principals import authenticate, channel_as

Stub = aggregator_pb2_grpc.AggregatorServiceStub


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    config = Config(database_path=str(tmp_path / "var" / "aggregator.db"))
    running = await RunningServer(build_app(config, Security(), authenticate), Listen(port=0)).start()
    yield running
    await running.stop(0)


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[Stub]:
    async with channel_as(server.target, "router") as channel:
        yield aggregator_pb2_grpc.AggregatorServiceStub(channel)


def at(text: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(text)
    return ts


async def two_fills(stub: Stub, signal_id: str, user_id: str = "alice") -> None:
    """An order filled on binance by two fills in one update (a maker fill with its time first)."""
    await create(stub, signal_id, user_id)
    for status, name in (
        (c.EXECUTION_STATUS_ROUTING, "routing"),
        (c.EXECUTION_STATUS_QUEUED, "queued"),
        (c.EXECUTION_STATUS_EXECUTING, "executing"),
    ):
        await record(stub, update(status, f"{signal_id}:{name}", signal_id, user_id, broker="binance"))
    fills = [
        c.Fill(
            venue_trade_id=f"{signal_id}-m",
            price="50000",
            quantity="0.0015",
            fee="-0.01",
            fee_currency="USD",
            liquidity=c.LIQUIDITY_MAKER,
            time=at("2024-03-05T10:00:00.250Z"),
        ),
        c.Fill(
            venue_trade_id=f"{signal_id}-t",
            price="50010",
            quantity="0.0005",
            fee="0.05",
            fee_currency="USD",
            liquidity=c.LIQUIDITY_TAKER,
        ),
    ]
    await record(
        stub,
        update(c.EXECUTION_STATUS_FILLED, f"{signal_id}:filled", signal_id, user_id, order_quantity="0.002", fills=fills),
    )


async def test_list_orders_pages_and_filters(stub: Stub) -> None:
    for n in range(5):
        await create(stub, f"s{n}", "alice")
    await lifecycle(stub, "s1", "alice")
    await create(stub, "b1", "bob")

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListOrders(a.ListOrdersRequest(user_id="alice", page_size=2, page_token=token), timeout=WAIT_S)
        seen += [o.signal_id for o in page.orders]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert (seen, pages) == (["s4", "s3", "s2", "s1", "s0"], 3)

    filled = await stub.ListOrders(
        a.ListOrdersRequest(user_id="alice", statuses=[c.EXECUTION_STATUS_FILLED], broker="kraken", pair="BTC-USD"),
        timeout=WAIT_S,
    )
    assert [(o.signal_id, o.filled_quantity) for o in filled.orders] == [("s1", "0.002")]
    assert filled.next_page_token == ""

    bad = await refused(stub.ListOrders(a.ListOrdersRequest(user_id="alice", page_token="nope!"), timeout=WAIT_S))
    assert (bad.code(), error_info(bad).reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_PAGE_TOKEN")
    big = await refused(stub.ListOrders(a.ListOrdersRequest(user_id="alice", page_size=1001), timeout=WAIT_S))
    assert (big.code(), error_info(big).reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_PAGE_SIZE")


async def test_list_fills_in_recorded_order(stub: Stub) -> None:
    await two_fills(stub, "s1")

    fills = (await stub.ListFills(a.ListFillsRequest(user_id="alice", signal_id="s1"), timeout=WAIT_S)).fills

    assert [(f.fill.venue_trade_id, f.broker, f.sequence, f.fill.liquidity) for f in fills] == [
        ("s1-m", "binance", 5, c.LIQUIDITY_MAKER),
        ("s1-t", "binance", 5, c.LIQUIDITY_TAKER),
    ]
    assert fills[0].fill.time == at("2024-03-05T10:00:00.250Z")
    missing = await refused(stub.ListFills(a.ListFillsRequest(user_id="alice", signal_id="nope"), timeout=WAIT_S))
    assert (missing.code(), error_info(missing).reason) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")


async def test_daily_summary_of_today(stub: Stub) -> None:
    await lifecycle(stub, "s1", "alice")  # kraken: 0.002 at 50000, fee 0.1
    await two_fills(stub, "s2")
    await create(stub, "s3", "alice")  # never routed

    today = await stub.GetDailySummary(a.GetDailySummaryRequest(user_id="alice"), timeout=WAIT_S)

    assert [(b.broker, b.orders, b.fills, b.traded_notional, b.fees, b.realized_pnl) for b in today.brokers] == [
        ("", 1, 0, "0", "0", "0"),
        ("binance", 1, 2, "100.005", "0.04", "0"),
        ("kraken", 1, 1, "100", "0.1", "0"),
    ]
    t = today.total
    assert (t.broker, t.orders, t.fills, t.traded_notional, t.fees, t.realized_pnl) == ("", 3, 3, "200.005", "0.14", "0")
    same = await stub.GetDailySummary(a.GetDailySummaryRequest(user_id="alice", day=today.day), timeout=WAIT_S)
    assert same == today

    bad = await refused(stub.GetDailySummary(a.GetDailySummaryRequest(user_id="alice", day="05/03/2024"), timeout=WAIT_S))
    assert (bad.code(), error_info(bad).reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_DAY")


async def test_a_user_reads_its_own_ledger_and_no_one_elses(server: RunningServer, stub: Stub) -> None:
    await lifecycle(stub, "s1", "alice")
    calls = (
        ("ListOrders", a.ListOrdersRequest(user_id="alice")),
        ("ListFills", a.ListFillsRequest(user_id="alice", signal_id="s1")),
        ("GetDailySummary", a.GetDailySummaryRequest(user_id="alice")),
    )
    async with channel_as(server.target, "alice") as own, channel_as(server.target, "bob") as other:
        alice, bob = Stub(own), Stub(other)
        for method, request in calls:
            await getattr(alice, method)(request, timeout=WAIT_S)
            denied = await refused(getattr(bob, method)(request, timeout=WAIT_S))
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, method
        orders = await alice.ListOrders(a.ListOrdersRequest(user_id="alice"), timeout=WAIT_S)
        assert [o.signal_id for o in orders.orders] == ["s1"]


# -- nija ledger export -----------------------------------------------------------------------


async def export(server: RunningServer, *options: str) -> int:
    # The CLI runs its own event loop: give it a thread, the server keeps this one.
    argv = ["ledger", "export", "--user", "alice", "--aggregator", server.target, "--token", "tok-admin", *options]
    return await asyncio.to_thread(cli.main, argv)


async def test_ledger_export_as_csv_and_jsonl(
    server: RunningServer, stub: Stub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await two_fills(stub, "s1")
    await create(stub, "s2", "alice")  # no fills
    await two_fills(stub, "b1", "bob")

    out = tmp_path / "alice.csv"
    assert await export(server, "--format", "csv", "--out", str(out)) == 0

    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert not (tmp_path / "alice.csv.partial").exists()
    assert [(r["signal_id"], r["venue_trade_id"]) for r in rows] == [("s2", ""), ("s1", "s1-m"), ("s1", "s1-t")]
    maker, taker = rows[1], rows[2]
    assert {k: maker[k] for k in ("user_id", "pair", "side", "status", "broker")} == {
        "user_id": "alice", "pair": "BTC-USD", "side": "buy", "status": "filled", "broker": "binance",
    }
    assert (maker["filled_quantity"], maker["average_price"], maker["fees_total"]) == ("0.002", "50002.5", "0.04")
    assert (maker["price"], maker["quantity"], maker["fee"], maker["fee_currency"]) == ("50000", "0.0015", "-0.01", "USD")
    assert (maker["liquidity"], maker["fill_time"]) == ("maker", "2024-03-05T10:00:00.250Z")
    assert (taker["price"], taker["quantity"], taker["liquidity"], taker["fill_time"]) == ("50010", "0.0005", "taker", "")
    assert rows[0]["status"] == "pending" and rows[0]["broker"] == "" and rows[0]["created_at"]

    capsys.readouterr()
    assert await export(server, "--format", "jsonl") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(o["signal_id"], len(o["fills"])) for o in lines] == [("s2", 0), ("s1", 2)]
    s1 = lines[1]
    assert (s1["filled_notional"], s1["order_quantity"], s1["status"], s1["size_usd"]) == ("100.005", "0.002", "filled", "100")
    assert s1["fills"][0] == {
        "venue_trade_id": "s1-m", "price": "50000", "quantity": "0.0015", "fee": "-0.01", "fee_currency": "USD",
        "liquidity": "maker", "fill_time": "2024-03-05T10:00:00.250Z", "broker": "binance", "sequence": 5,
    }

    # --from/--to bound the orders' creation day (UTC, --to inclusive).
    today = (await stub.GetDailySummary(a.GetDailySummaryRequest(user_id="alice"), timeout=WAIT_S)).day
    assert await export(server, "--format", "jsonl", "--from", today, "--to", today) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert await export(server, "--format", "jsonl", "--to", "2000-01-01") == 0
    assert capsys.readouterr().out == ""


async def test_a_failed_export_leaves_no_file(server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.csv"
    argv = ["ledger", "export", "--user", "alice", "--aggregator", server.target, "--token", "tok-bob", "--out", str(out)]

    assert await asyncio.to_thread(cli.main, argv) == 1

    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "x.csv.partial").exists()
