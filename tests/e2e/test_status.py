"""`nija status` against a real `nija up` mesh while a strategy trades through `NijaClient`
(issue 7): every service SERVING, every breaker closed, trades flowing at a non-zero rate."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from services import cli
from services.client import NijaClient, NijaError
from services.runtime.security import Security
from tests.e2e.up import UpMesh, start_up

pytestmark = pytest.mark.e2e

SERVICES = 9  # simexchange, permission, aggregator, 4 executors, router, gateway


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    # Kraken's published limits pace its first book loads over ~10 s; this test is about the view.
    up = start_up(tmp_path_factory.mktemp("status"), "--set", "executor-kraken:rate_limits=off")
    yield up
    assert up.stop() == 0


async def _trade_until(mesh: UpMesh, stop: threading.Event, filled: list[str], errors: list[BaseException]) -> None:
    """Alice trades ETH-USD back and forth, one order after the other, until told to stop."""
    async with NijaClient(mesh.targets["router"], token=mesh.token("alice"), environ={}, strategy="e2e") as nija:
        i = 0
        while not stop.is_set():
            try:
                result = await nija.place_order_async(
                    "alice", "ETH-USD", ("buy", "sell")[i % 2], "60", kind="exit", signal_id=f"status-{i}", timeout=30,
                )
            except NijaError as exc:
                errors.append(exc)
                return
            filled.append(result.state.value)
            i += 1


def test_status_shows_every_service_serving_and_the_trades_flowing(mesh: UpMesh) -> None:
    stop, filled, errors = threading.Event(), [], []
    trader = threading.Thread(target=lambda: asyncio.run(_trade_until(mesh, stop, filled, errors)))
    trader.start()
    try:
        while len(filled) < 2 and trader.is_alive():  # counters are non-zero before the first scrape
            threading.Event().wait(0.05)
        with ThreadPoolExecutor(2) as pool:
            as_json = pool.submit(mesh.nija, "status", "--json", "--interval", "1")
            as_table = pool.submit(mesh.nija, "status", "--interval", "1")
            as_json, as_table = as_json.result(), as_table.result()
    finally:
        stop.set()
        trader.join(timeout=60)
    assert not errors and filled and set(filled) == {"filled"}, (errors, filled)

    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    view = json.loads(as_json.stdout)
    assert view["serving"] and len(view["services"]) == SERVICES
    assert all(s["health"] == "SERVING" and s["metrics_ok"] for s in view["services"]), view["services"]
    assert sorted(b["broker"] for b in view["brokers"]) == ["alpaca", "binance", "coinbase", "kraken"]
    assert all(b["breaker"] == "closed" and b["queue_depth"] is not None for b in view["brokers"]), view["brokers"]
    totals = view["totals"]
    assert totals["routed"] >= 2 and totals["executions"] >= 2 and totals["successes"] >= 2, totals
    assert totals["routed_per_s"] > 0 and totals["executions_per_s"] > 0 and totals["success_rate"] == 1.0, totals
    assert totals["routing_latency_ms"] > 0 and totals["failovers"] == 0
    busy = [b for b in view["brokers"] if b["routed"] > 0]
    assert busy and sum(b["routed"] for b in view["brokers"]) == totals["routed"]

    assert as_table.returncode == 0, as_table.stdout + as_table.stderr
    assert as_table.stdout.count("SERVING") == SERVICES
    rows = {line.split()[0]: line for line in as_table.stdout.splitlines() if line.strip()}
    for broker in ("coinbase", "kraken", "binance", "alpaca"):
        assert "closed" in rows[f"executor-{broker}"], as_table.stdout
        assert "/s" in rows[f"executor-{broker}"], as_table.stdout
    routed = re.search(r"routed (\d+), ([\d.]+)/s", as_table.stdout)
    assert routed and int(routed.group(1)) >= 2 and float(routed.group(2)) > 0, as_table.stdout


def test_the_demo_trades_through_the_client(mesh: UpMesh, capsys: pytest.CaptureFixture[str]) -> None:
    """What `nija up --demo` runs once the mesh is up: each demo user with their own token."""
    tokens = {user: mesh.token(user) for user in ("alice", "bob", "carol", "dave")}
    asyncio.run(cli.run_demo(mesh.targets["router"], mesh.targets["permission"], tokens, Security()))
    out = capsys.readouterr().out
    assert out.count("filled   ") == 3 and out.count("refused: ") == 2, out  # alice twice and bob; dave and carol
    assert "refused: PERMISSION_DENIED PAIR_NOT_ALLOWED" in out and "refused: FAILED_PRECONDITION USER_DISABLED" in out
    assert "alice  BTC-USD" in out and "bob    ETH-USD" in out and "today: traded $" in out
