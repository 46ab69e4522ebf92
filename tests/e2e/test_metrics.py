"""/metrics, /health and /ready on every service (service port + 1000), after real trades
(issue 7, acceptance 2): the seed's metric names, with values that match the ledger."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from nija.common.v1 import common_pb2
from nija.router.v1 import router_pb2, router_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from services.runtime.channels import open_channel
from services.runtime.metrics import EXPORTED
from services.runtime.wire import status_name
from tests.e2e.up import UpMesh, start_up

pytestmark = pytest.mark.e2e

SIGNALS = 24


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    up = start_up(tmp_path_factory.mktemp("metrics"))
    yield up
    assert up.stop() == 0


def _get(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = _get(address, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


async def _trade(mesh: UpMesh) -> list[str]:
    outcomes = []
    async with open_channel(mesh.targets["router"], mesh.security()) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)

        async def one(i: int, user: str) -> None:
            pb = common_pb2.TradeSignal(signal_id=f"m-{i}", user_id=user, pair="ETH-USD", side=common_pb2.SIDE_BUY,
                                        size_usd="80", signal_type=common_pb2.SIGNAL_TYPE_EXIT, strategy="metrics")
            try:
                updates = [r.update async for r in stub.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=60)]
                outcomes.append(status_name(updates[-1].status))
            except Exception as exc:  # noqa: BLE001 - recorded, asserted below
                outcomes.append(type(exc).__name__)

        await asyncio.gather(*(one(i, ("alice", "bob")[i % 2]) for i in range(SIGNALS)), one(99, "carol"))
    return outcomes


def test_every_service_serves_probes_and_metrics_that_match_the_ledger(mesh: UpMesh) -> None:
    outcomes = asyncio.run(_trade(mesh))
    assert outcomes.count("filled") == SIGNALS and len(outcomes) == SIGNALS + 1  # carol is disabled

    metrics = json.loads(mesh.manifest.read_text())
    for name, entry in metrics.items():
        address = entry["metrics"]
        assert _get(address, "/health") == (200, "ok\n"), name
        assert _get(address, "/ready") == (200, "ready\n"), name
        assert _get(address, "/nope")[0] == 404

    with sqlite3.connect(f"file:{mesh.dir / 'aggregator.db'}?mode=ro", uri=True) as conn:
        routed = conn.execute("SELECT count(*) FROM updates WHERE status = 'routing'").fetchone()[0]
        filled = dict(conn.execute("SELECT broker, count(*) FROM orders WHERE status = 'filled' GROUP BY broker"))

    router = _samples(metrics["router"]["metrics"])
    assert _total(router, "nija_trades_routed_total") == routed == SIGNALS
    assert _total(router, "nija_routing_latency_seconds_count") == SIGNALS
    assert _total(router, "nija_reservation_denials_total", reason="USER_DISABLED") == 1
    # Every call a server handles is counted by method (what a trade costs in calls, `nija bench`).
    assert _total(router, "nija_rpc_calls_total", method="/nija.router.v1.RouterService/SubmitSignal") == SIGNALS + 1
    permission = _samples(metrics["permission"]["metrics"])
    assert _total(permission, "nija_rpc_calls_total", method="/nija.permission.v1.PermissionService/ReserveTrade") \
        == SIGNALS + 1

    for broker in ("binance", "coinbase", "kraken", "alpaca"):
        executor = _samples(metrics[f"executor-{broker}"]["metrics"])
        assert _total(executor, "nija_executions_total", broker=broker, status="filled") == filled.get(broker, 0)
        assert _total(executor, "nija_executions_success_total", broker=broker) == filled.get(broker, 0)
        assert (("nija_executor_queue_depth", (("broker", broker),)) in executor)
        assert executor[("nija_breaker_state", (("broker", broker),))] == 0
    assert sum(filled.values()) == SIGNALS

    aggregator = _samples(metrics["aggregator"]["metrics"])
    assert _total(aggregator, "nija_ledger_write_seconds_count") >= SIGNALS * 4
    assert ("nija_stream_watchers", ()) in aggregator
    # The seed's five names are all there.
    seen = {n for address in (e["metrics"] for e in metrics.values()) for (n, _) in _samples(address)}
    for name in ("nija_trades_routed_total", "nija_routing_latency_seconds_count", "nija_executions_total",
                 "nija_executions_success_total", "nija_executor_queue_depth"):
        assert name in seen and name.removesuffix("_count") in " ".join(EXPORTED), name
