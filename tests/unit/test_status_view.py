"""`nija status` without a mesh (issue 7): Prometheus text -> samples -> the view model -> a table,
and the snapshot / follow loops on a fake probe and clock."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

from rich.console import Console

from services.status.members import Member, kind_of, read_manifest
from services.status.probe import follow, snapshot
from services.status.promtext import Samples, counter_delta, parse_metrics
from services.status.render import render
from services.status.view import Scrape, build_view

MEMBERS = (
    Member("simexchange", "127.0.0.1:50070", "127.0.0.1:51070"),
    Member("aggregator", "127.0.0.1:50053", "127.0.0.1:51053"),
    Member("executor-kraken", "127.0.0.1:50062", "127.0.0.1:51062"),
    Member("executor-binance", "127.0.0.1:50063", "127.0.0.1:51063"),
    Member("router", "127.0.0.1:50051", "127.0.0.1:51051"),
    Member("router-2", "127.0.0.1:50151", "127.0.0.1:51151"),
)
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def router_text(routed: dict[str, int], failovers: dict[str, int] | None = None, latency: tuple[float, int] = (0, 0)) -> str:
    lines = ["# HELP nija_trades_routed_total Signals routed", "# TYPE nija_trades_routed_total counter"]
    lines += [f'nija_trades_routed_total{{broker="{b}",pair="BTC-USD"}} {n}.0' for b, n in routed.items()]
    lines += ["# TYPE nija_failovers_total counter"]
    lines += [f'nija_failovers_total{{broker="{b}"}} {n}.0' for b, n in (failovers or {}).items()]
    lines += ["# TYPE nija_routing_latency_seconds histogram",
              f'nija_routing_latency_seconds_bucket{{le="+Inf"}} {latency[1]}.0',
              f"nija_routing_latency_seconds_sum {latency[0]}", f"nija_routing_latency_seconds_count {latency[1]}.0"]
    return "\n".join(lines) + "\n"


def executor_text(broker: str, filled: int, failed: int, queue: int = 0, breaker: int = 0) -> str:
    return "\n".join([
        "# TYPE nija_executions_total counter",
        f'nija_executions_total{{broker="{broker}",pair="BTC-USD",status="filled"}} {filled}.0',
        f'nija_executions_total{{broker="{broker}",pair="ETH-USD",status="failed"}} {failed}.0',
        "# TYPE nija_executions_success_total counter",
        f'nija_executions_success_total{{broker="{broker}",pair="BTC-USD"}} {filled}.0',
        "# TYPE nija_executor_queue_depth gauge", f'nija_executor_queue_depth{{broker="{broker}"}} {queue}.0',
        "# TYPE nija_breaker_state gauge", f'nija_breaker_state{{broker="{broker}"}} {breaker}.0',
    ]) + "\n"


def scrape(at: float, metrics: dict[str, str | None], health: dict[str, str] | None = None) -> Scrape:
    return Scrape(
        at=at, taken_at=T0,
        health={m.name: (health or {}).get(m.name, "SERVING") for m in MEMBERS},
        metrics={m.name: parse_metrics(t) if t is not None else None for m, t in
                 ((m, metrics.get(m.name, "")) for m in MEMBERS)},
    )


def test_prometheus_text_becomes_samples_and_counters_grow_across_resets() -> None:
    samples = parse_metrics(router_text({"kraken": 3, "binance": 4}, latency=(0.5, 7)))
    assert samples.total("nija_trades_routed_total") == 7
    assert samples.total("nija_trades_routed_total", broker="kraken") == 3
    assert samples.value("nija_routing_latency_seconds_count") == 7
    assert samples.value("nija_breaker_state") is None and samples.total("nope") == 0

    before = parse_metrics(router_text({"kraken": 10, "binance": 4}))
    after = parse_metrics(router_text({"kraken": 2, "binance": 6, "alpaca": 1}))  # kraken's router restarted
    assert counter_delta(before, after, "nija_trades_routed_total") == 2 + 2 + 1
    assert counter_delta(None, after, "nija_trades_routed_total") is None
    assert counter_delta(Samples(), after, "nija_trades_routed_total", broker="alpaca") == 1


def test_two_scrapes_make_rates_breakers_queues_and_failovers() -> None:
    first = scrape(100.0, {
        "router": router_text({"kraken": 10, "binance": 5}, {"binance": 1}, latency=(0.02, 15)),
        "router-2": router_text({"kraken": 2}),
        "executor-kraken": executor_text("kraken", filled=11, failed=1),
        "executor-binance": executor_text("binance", filled=4, failed=0),
    })
    second = scrape(102.0, {
        "router": router_text({"kraken": 14, "binance": 5}, {"binance": 3}, latency=(0.05, 21)),
        "router-2": router_text({"kraken": 4}),
        "executor-kraken": executor_text("kraken", filled=16, failed=2, queue=3),
        "executor-binance": executor_text("binance", filled=4, failed=0, breaker=2),
        "aggregator": "# TYPE nija_stream_watchers gauge\nnija_stream_watchers 2.0\n",
    }, health={"executor-binance": "NOT_SERVING"})

    view = build_view(MEMBERS, first, second)

    assert view.window_s == 2.0
    kraken, binance = view.brokers
    assert (kraken.broker, kraken.breaker, kraken.queue_depth) == ("kraken", "closed", 3)
    assert (kraken.routed, kraken.routed_per_s) == (18, 3.0)  # both routers: (4 + 2) / 2 s
    assert (kraken.executions, kraken.executions_per_s, kraken.successes) == (18, 3.0, 16)
    assert kraken.success_rate == 5 / 6 and kraken.success_rate_total == 16 / 18
    assert (binance.breaker, binance.health, binance.failovers, binance.failovers_recent) == ("open", "NOT_SERVING", 3, 2)
    assert binance.success_rate is None and binance.success_rate_total == 1.0  # nothing ended in the window
    totals = view.totals
    assert (totals.routed, totals.routed_per_s, totals.executions_per_s) == (23, 3.0, 3.0)
    assert totals.routing_latency_ms == 0.03 / 6 * 1000 and totals.watchers == 2
    assert (totals.failovers, totals.failovers_recent) == (3, 2)
    assert not view.serving and view.not_serving == ("executor-binance",)
    assert [s.metrics_ok for s in view.services] == [True] * len(MEMBERS)

    as_json = json.loads(json.dumps(view.to_dict()))
    assert as_json["brokers"][0]["routed_per_s"] == 3.0 and as_json["not_serving"] == ["executor-binance"]


def test_a_service_that_cannot_be_scraped_has_no_rates_and_an_unknown_breaker() -> None:
    first = scrape(0.0, {"router": router_text({"kraken": 1}), "executor-kraken": None})
    second = scrape(1.0, {"router": router_text({"kraken": 2}), "executor-kraken": None},
                    health={"executor-kraken": "UNAVAILABLE"})
    view = build_view(MEMBERS, first, second)
    kraken = view.brokers[0]
    assert (kraken.breaker, kraken.queue_depth, kraken.executions_per_s, kraken.routed_per_s) == ("unknown", None, None, 1.0)
    assert not next(s for s in view.services if s.name == "executor-kraken").metrics_ok
    single = build_view(MEMBERS, None, second)  # one scrape: no window, no rates
    assert single.window_s == 0 and single.totals.routed_per_s is None and single.totals.routed == 2


def test_the_table_has_one_health_per_service_and_each_executors_flow() -> None:
    first = scrape(0.0, {"router": router_text({"kraken": 1}), "executor-kraken": executor_text("kraken", 1, 0),
                         "executor-binance": executor_text("binance", 0, 0)})
    second = scrape(1.0, {"router": router_text({"kraken": 3}), "executor-kraken": executor_text("kraken", 3, 0),
                          "executor-binance": executor_text("binance", 0, 0, breaker=1)})
    console = Console(record=True, width=160, color_system=None)
    console.print(render(build_view(MEMBERS, first, second)))
    text = console.export_text()
    assert text.count("SERVING") == len(MEMBERS)
    kraken_row = next(line for line in text.splitlines() if line.strip().startswith("executor-kraken"))
    assert "closed" in kraken_row and "3, 2.0/s" in kraken_row and "100%" in kraken_row
    assert "half-open" in next(line for line in text.splitlines() if line.strip().startswith("executor-binance"))
    assert "not serving" not in text

    down = scrape(2.0, {}, health={"router-2": "UNAVAILABLE"})
    console = Console(record=True, width=160, color_system=None)
    console.print(render(build_view(MEMBERS, second, down)))
    assert "not serving: router-2" in console.export_text()


class FakeProbe:
    """Scrapes that come from a list, timed by a fake clock."""

    def __init__(self, texts: list[str]) -> None:
        self.members = (Member("router", "127.0.0.1:1", "127.0.0.1:2"),)
        self.texts = texts
        self.now = 0.0
        self.scrapes = 0

    async def scrape(self) -> Scrape:
        text = self.texts[min(self.scrapes, len(self.texts) - 1)]
        self.scrapes += 1
        return Scrape(self.now, T0, {"router": "SERVING"}, {"router": parse_metrics(text)})


async def test_snapshot_rates_come_from_the_injected_clock() -> None:
    probe = FakeProbe([router_text({"kraken": 5}), router_text({"kraken": 25})])

    async def sleep(seconds: float) -> None:
        probe.now += seconds

    view = await snapshot(probe, 4.0, sleep=sleep)  # type: ignore[arg-type]
    assert view.window_s == 4.0 and view.totals.routed_per_s == 5.0 and view.serving


async def test_follow_shows_a_view_per_interval_until_stopped() -> None:
    probe = FakeProbe([router_text({"kraken": n}) for n in (1, 2, 4, 8)])
    stop = asyncio.Event()
    shown = []

    def show(view) -> None:  # type: ignore[no-untyped-def]
        shown.append(view.totals.routed)
        probe.now += 1.0
        if len(shown) == 3:
            stop.set()

    last = await follow(probe, 0.001, show, stop)  # type: ignore[arg-type]
    assert shown == [1, 2, 4] and last.totals.routed == 4 and probe.scrapes == 3


def test_members_come_from_the_manifest_or_the_default_ports(tmp_path, monkeypatch) -> None:
    manifest = tmp_path / "mesh.json"
    manifest.write_text(json.dumps({
        "router": {"target": "127.0.0.1:41000", "metrics": "127.0.0.1:42000", "pid": 1, "log": "x"},
        "executor-kraken": {"target": "127.0.0.1:41001", "pid": 2, "log": "y"},  # an older manifest: no metrics
    }))
    members = read_manifest(manifest)
    assert members["router"].metrics == "127.0.0.1:42000" and members["executor-kraken"].metrics == "127.0.0.1:42001"
    assert members["executor-kraken"].broker == "kraken" and members["router"].broker is None
    assert kind_of("router-2") == "router" and members["executor-kraken"].health_name == "nija.executor.v1.ExecutorService"
    monkeypatch.chdir(tmp_path)  # no var/mesh.json here
    defaults = read_manifest(None)
    assert defaults["router"].target == "127.0.0.1:50051" and defaults["router"].metrics == "127.0.0.1:51051"


def test_nija_status_exits_non_zero_when_a_service_is_not_serving(tmp_path, capsys) -> None:
    from services import cli

    manifest = tmp_path / "mesh.json"  # nothing listens on port 1: connection refused at once
    manifest.write_text(json.dumps({"router": {"target": "127.0.0.1:1", "metrics": "127.0.0.1:1"}}))
    assert cli.main(["status", "--mesh", str(manifest), "--json", "--interval", "0.05"]) == 1
    view = json.loads(capsys.readouterr().out)
    assert view["not_serving"] == ["router"] and view["services"][0]["health"] == "UNAVAILABLE"
    assert not view["services"][0]["metrics_ok"]
    assert cli.main(["status", "--mesh", str(manifest), "--interval", "0.05"]) == 1
    assert "not serving: router" in capsys.readouterr().out
