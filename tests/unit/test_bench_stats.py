"""`nija bench`'s pure parts: percentiles, histograms, throughput series, Prometheus bucket
quantiles, /proc parsing, target evaluation and the report rendered from a result dict."""

from __future__ import annotations

import math

import pytest

from services.bench import mesh, report, stats, targets
from services.bench.load import split_window

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_percentiles_are_nearest_rank_in_ms() -> None:
    samples = [i * 1_000_000 for i in range(1, 101)]  # 1 .. 100 ms
    p = stats.percentiles(samples)
    assert p is not None
    assert (p.n, p.p50, p.p90, p.p99, p.max) == (100, 51.0, 91.0, 100.0, 100.0)
    assert p.mean == pytest.approx(50.5)
    assert stats.percentiles([]) is None
    one = stats.percentiles([2_500_000])
    assert one is not None and one.p50 == one.p99 == one.max == 2.5
    assert "p99 100.000 ms" in str(p)


def test_histogram_keeps_every_sample() -> None:
    edges = [1.0, 10.0, 100.0]
    assert stats.histogram([0.5, 1.0, 9.9, 10.0, 99.0, 1e6], edges) == [3, 3]
    with pytest.raises(ValueError):
        stats.histogram([1.0], [1.0])


def test_log_edges_span_the_range_evenly_on_a_log_scale() -> None:
    edges = stats.log_edges(0.1, 1000.0, 2)
    assert edges[0] == 0.1 and edges[-1] == pytest.approx(1000.0)
    assert len(edges) == 9
    assert [b / a for a, b in zip(edges, edges[1:])] == pytest.approx([math.sqrt(10)] * 8, rel=1e-4)


def test_throughput_series_counts_per_window_and_keeps_gaps() -> None:
    series = stats.throughput_series([0.1, 0.2, 0.4, 1.6, 1.7], 0.5)
    assert series == [(0.0, 3), (0.5, 0), (1.0, 0), (1.5, 2)]
    assert stats.throughput_series([]) == []
    with pytest.raises(ValueError):
        stats.throughput_series([1.0], 0)


def test_bucket_quantile_reads_the_bound_of_the_bucket_holding_it() -> None:
    before = {0.001: 10.0, 0.005: 10.0, 0.01: 10.0, math.inf: 10.0}
    after = {0.001: 60.0, 0.005: 105.0, 0.01: 109.0, math.inf: 110.0}
    delta = stats.bucket_delta(before, after)
    assert delta == {0.001: 50.0, 0.005: 95.0, 0.01: 99.0, math.inf: 100.0}
    assert stats.bucket_quantile(delta, 0.5) == 0.001
    assert stats.bucket_quantile(delta, 0.9) == 0.005
    assert stats.bucket_quantile(delta, 0.99) == 0.01
    assert stats.bucket_quantile(delta, 1.0) == math.inf
    assert stats.bucket_quantile({0.001: 0.0, math.inf: 0.0}, 0.99) is None


def test_ratio_and_rate_handle_missing_figures() -> None:
    assert stats.ratio(50.0, 200.0) == 0.25
    assert stats.ratio(None, 200.0) is None and stats.ratio(50.0, 0.0) is None
    assert stats.rate(10, 2.0) == 5.0 and stats.rate(10, 0.0) == 0.0


def test_split_window_spreads_the_window_over_the_streams() -> None:
    assert split_window(200, 4) == [50, 50, 50, 50]
    assert split_window(10, 4) == [3, 3, 2, 2]
    assert split_window(2, 4) == [1, 1]


def test_proc_parsing_names_services_and_reads_cpu() -> None:
    argv = ["/venv/bin/python", "-m", "services.cli", "serve", "executor", "--port", "0", "--set", "broker=kraken"]
    assert mesh.service_name(argv) == "executor-kraken"
    assert mesh.service_name(["python", "-m", "services.cli", "serve", "router", "--port", "0"]) == "router"
    assert mesh.service_name(["python", "-m", "services.cli", "up"]) is None
    # A command name with spaces and parentheses must not shift the fields.
    stat = "1234 (python (a) b) S 99 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3"
    assert mesh.stat_fields(stat)[1] == "99"
    assert mesh.cpu_seconds(stat, ticks=100) == 3.0
    status = "Name:\tpython\nVmHWM:\t  153600 kB\nVmRSS:\t  102400 kB\n"
    assert mesh.status_kb(status, "VmHWM") == 153600
    assert mesh.status_kb(status, "VmSwap") is None
    before = {"router": mesh.Usage(1.0, 0, 0), "gone": mesh.Usage(1.0, 0, 0)}
    after = {"router": mesh.Usage(3.5, 0, 0), "new": mesh.Usage(1.0, 0, 0)}
    assert mesh.cpu_deltas(before, after) == {"router": 2.5}


def _result(**overrides: object) -> dict:
    """A result dict as `run` builds it, every target met unless overridden."""
    terminal = {"n": 20000, "p50": 40.0, "p90": 90.0, "p99": 180.0, "max": 400.0, "mean": 50.0}
    hist = {"edges_ms": stats.log_edges(1.0, 1000.0, 5),
            "counts": stats.histogram([10.0, 20.0, 40.0, 180.0], stats.log_edges(1.0, 1000.0, 5))}
    result = {
        "started_utc": "2026-12-07T08:00:00+00:00",
        "machine": {"nproc": 2, "python": "3.11.7", "grpcio": "1.85.1"},
        "config": {"users": 1000, "signals": 20000, "concurrency": 200, "streams": 4, "modes": ["burst"],
                   "venue_latency_ms": 0, "noisy_s": 20, "flood_concurrency": 100, "scale_factor": 10},
        "notes": ["a note for the report"],
        "burst": {"size": 1000, "sent": 1000, "filled": 1000, "success_pct": 100.0, "elapsed_s": 1.5,
                  "throughput_per_s": 666.7, "terminal": terminal, "outcomes": {"filled": 1000}},
        "sustained": {"sent": 20000, "filled": 20000, "throughput_per_s": 1200.0, "echo_ratio": 0.3,
                      "first": terminal, "terminal": terminal, "mesh_cpu_ms_per_signal": 1.2,
                      "terminal_histogram": hist, "throughput_series": [[0.0, 500], [0.5, 600], [1.0, 610]],
                      "routing_in_mesh": {"p99_le_ms": 2.5}, "venue_rate_limit_waits": {"binance": 3},
                      "outcomes": {"filled": 20000}},
        "stream": {"available": True, "sent": 20000, "filled": 20000, "throughput_per_s": 2600.0,
                   "echo_ratio": 0.55, "first": terminal, "terminal": terminal, "terminal_histogram": hist,
                   "throughput_series": [[0.0, 1200], [0.5, 1300]]},
        "baseline": {"unary_per_s": 4000.0, "stream_per_s": 4727.0, "payload_bytes": 80},
        "routing": {"concurrency": 100, "latency": {"p50": 1.0, "p90": 2.0, "p99": 4.0, "max": 9.0}},
        "noisy": {"quiet_users": 50, "alone": {"terminal": {"p99": 30.0}}, "at_limit": {"terminal": {"p99": 36.0}},
                  "flooded": {"terminal": {"p99": 40.0}}, "p99_ratio": 1.333, "at_limit_p99_ratio": 1.2,
                  "flooded_vs_at_limit_p99_ratio": 1.111, "flood": {"refused": 9000}},
        "scale": {"factor": 10, "throughput_ratio": 0.9, "rss_growth": {"router": 1.4, "permission": 2.0},
                  "rss_mb": {"router": 98.0, "permission": 120.0}},
        "services": {"cpu_s": {"router": 12.0, "permission": 9.0}, "peak_rss_mb": {"router": 70.0, "permission": 60.0}},
        "load_generator": {"cpu_s": 30.0},
    }
    for path, value in overrides.items():
        node = result
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return result


def _by_name(checks: list[targets.Check]) -> dict[str, targets.Check]:
    return {f"{c.group}/{c.name}": c for c in checks}


def test_every_target_passes_when_every_figure_meets_it() -> None:
    checks = targets.evaluate(_result())
    assert targets.failed(checks) == []
    verdicts = {c.verdict for c in checks}
    assert "PASS" in verdicts and "FAIL" not in verdicts
    assert _by_name(checks)["burst/completion time"].ok is True


@pytest.mark.parametrize(("path", "value", "name"), [
    ("burst__elapsed_s", 2.5, "burst/completion time"),
    ("burst__filled", 999, "burst/filled"),
    ("sustained__echo_ratio", 0.2, "sustained/SubmitSignal / bare echo"),
    ("stream__echo_ratio", 0.49, "stream/SubmitSignals / bare echo"),
    ("routing__latency", {"p50": 1.0, "p99": 5.0, "max": 9.0}, "routing/QuoteRoute p99 (concurrency 100)"),
    ("noisy__p99_ratio", 1.6, "noisy/flooded / alone p99"),
    ("scale__throughput_ratio", 0.79, "scale/throughput 10x / 1x"),
    ("services__peak_rss_mb", {"router": 151.0}, "memory/peak RSS per service, largest (router) at 1000 users"),
    ("scale__rss_growth", {"router": 10.0}, "scale/peak RSS growth, largest (router)"),
])
def test_a_target_that_is_missed_shows_fail(path: str, value: object, name: str) -> None:
    checks = _by_name(targets.evaluate(_result(**{path: value})))
    assert checks[name].ok is False and checks[name].verdict == "FAIL"
    assert "FAIL" in report.render_table(list(checks.values()))


def test_terminal_p99_is_judged_only_at_the_targets_concurrency() -> None:
    name = "sustained/submit -> terminal p99 (concurrency {})"
    slow = {"n": 1, "p50": 1.0, "p90": 1.0, "p99": 300.0, "max": 300.0, "mean": 1.0}
    assert _by_name(targets.evaluate(_result(sustained__terminal=slow)))[name.format(200)].verdict == "FAIL"
    at_100 = _result(sustained__terminal=slow, config__concurrency=100)
    assert _by_name(targets.evaluate(at_100))[name.format(100)].verdict == ""


def test_a_figure_not_measured_is_not_available_rather_than_failed() -> None:
    result = _result(stream={"available": False, "note": "not available: UNIMPLEMENTED"})
    del result["noisy"]
    checks = _by_name(targets.evaluate(result))
    ratio = checks["stream/SubmitSignals / bare echo"]
    assert ratio.verdict == "n/a" and ratio.ok is None and ratio.shown() == "not available"
    assert checks["noisy/flooded / alone p99"].verdict == "n/a"
    assert not targets.failed(list(checks.values()))


def test_the_markdown_report_holds_every_figure(tmp_path) -> None:
    result = _result()
    checks = targets.evaluate(result)
    text = report.render_markdown(result, checks)
    for check in checks:
        assert check.name in text
        assert check.shown() in text
    assert "a note for the report" in text
    assert "hold no exchange API keys" in text
    assert "| router | 12.00 | 70.0 | 98.0 | 1.40 |  |" in text
    assert "router" in report.render_services(result) and "MB per 1,000 users" in report.render_services(result)


def test_the_charts_are_png_files(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    written, note = report.write_charts(_result(), tmp_path)
    assert written == ["latency.png", "throughput.png"] and note == ""
    for name in written:
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)


def test_the_noisy_neighbours_two_causes_are_shown_beside_the_target() -> None:
    checks = _by_name(targets.evaluate(_result()))
    assert checks["noisy/quiet users' p99, a neighbour trading at its limit"].shown() == "36.00 ms"
    assert checks["noisy/at its limit / alone p99 (what permitted trades cost)"].shown() == "1.200x"
    excess = checks["noisy/flooded / at its limit p99 (what the excess costs)"]
    assert excess.shown() == "1.111x" and excess.verdict == ""  # a figure, not a target


def test_interleaved_windows_add_up_to_one_result() -> None:
    from services.bench.load import LoadResult
    total, window = LoadResult(), LoadResult(sent=3, elapsed_s=1.5, terminal_ns=[1, 2], updates=7)
    window.outcomes["filled"] += 2
    total.absorb(window)
    total.absorb(window)
    assert (total.sent, total.elapsed_s, total.terminal_ns, total.updates) == (6, 3.0, [1, 2, 1, 2], 14)
    assert total.outcomes == {"filled": 4} and total.ended == 4


def test_calls_per_signal_are_the_counter_deltas_by_server_and_method() -> None:
    from services.bench.run import calls_per_signal

    before = {"router": {"/nija.router.v1.RouterService/SubmitSignal": 10.0},
              "aggregator": {"/nija.aggregator.v1.AggregatorService/RecordUpdates": 2.0}}
    after = {"router": {"/nija.router.v1.RouterService/SubmitSignal": 110.0, "/grpc.health.v1.Health/Check": 500.0},
             "aggregator": {"/nija.aggregator.v1.AggregatorService/RecordUpdates": 2.0,
                            "/nija.aggregator.v1.AggregatorService/CreateOrder": 100.0},
             "permission": {"/nija.permission.v1.PermissionService/ReserveTrade": 100.0,
                            "/nija.permission.v1.PermissionService/GetCredentials": 50.0}}
    calls = calls_per_signal(before, after, 100)
    assert calls == {"router RouterService/SubmitSignal": 1.0, "aggregator AggregatorService/CreateOrder": 1.0,
                     "permission PermissionService/ReserveTrade": 1.0, "permission PermissionService/GetCredentials": 0.5}
    assert list(calls)[-1] == "permission PermissionService/GetCredentials"  # busiest first

    result = {"sustained": {"calls_per_signal": calls}}
    text = report.render_markdown(result, targets.evaluate(result))
    assert "3.50 calls handled per signal" in text and "| permission | PermissionService/GetCredentials | 0.50 |" in text
