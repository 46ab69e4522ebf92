"""The Grafana dashboard (deploy/grafana/) has the seed's four panels plus breaker state and
failovers, and queries only metric names the code really exports (issue 7)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from services.runtime.metrics import EXPORTED, HISTOGRAMS

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "nija-mesh.json"
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def _panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def test_the_seeds_four_panels_and_breaker_state_and_failovers_are_there() -> None:
    titles = [p["title"] for p in _panels()]
    for wanted in ("Trades routed per second", "Routing latency p99", "Execution success rate by broker",
                   "Queue depth by broker", "Circuit breaker state", "Failovers"):
        assert any(t.startswith(wanted) for t in titles), wanted


def unknown_names(expr: str) -> set[str]:
    """The nija_* names in a PromQL expression that the code does not export."""
    unknown = set()
    series = {n for n in EXPORTED if n not in HISTOGRAMS} | {h + s for h in HISTOGRAMS for s in HISTOGRAM_SERIES}
    for name in re.findall(r"\bnija_[a-z_]+", expr):
        if name not in series:
            unknown.add(name)
    return unknown


def test_every_query_uses_only_metric_names_the_code_exports() -> None:
    exprs = [t["expr"] for p in _panels() for t in p["targets"]]
    assert all(p["targets"] for p in _panels())
    assert [e for e in exprs if unknown_names(e)] == []
    used = {n for e in exprs for n in re.findall(r"\bnija_[a-z_]+", e)}
    assert {"nija_trades_routed_total", "nija_routing_latency_seconds_bucket", "nija_executions_total",
            "nija_executions_success_total", "nija_executor_queue_depth"} <= used


def test_the_check_catches_a_name_the_code_does_not_export() -> None:
    assert unknown_names("sum(rate(nija_trades_total[1m]))") == {"nija_trades_total"}
    assert unknown_names("rate(nija_executor_queue_depth_bucket[1m])") == {"nija_executor_queue_depth_bucket"}
    assert unknown_names("histogram_quantile(0.9, rate(nija_routing_latency_seconds_bucket[1m]))") == set()
