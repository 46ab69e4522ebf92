"""The run's report: the figures table (terminal and Markdown) and two PNG charts, all rendered
from the result dict alone (what result.json holds), so a saved run can be rendered again.

The PNGs need matplotlib (the `bench` extra); without it they are skipped with a note.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from services.bench.targets import Check, get

EXPLANATIONS = """\
## How to read this

- **burst**: the seed's test. One user per signal, each a $100 BTC-USD entry (a marketable limit
  order), all sent at once on one connected channel; completion time runs from the first send to
  the last terminal update.
- **sustained**: `{signals}` signals ($100 BTC-USD market) at concurrency {concurrency} through
  `RouterService/SubmitSignal`, each read to its terminal update; **stream**: the same through the
  bidirectional `RouterService/SubmitSignals`, {concurrency} in flight over {streams} streams.
- **bare echo**: in the same run, a grpc.aio echo server process with nothing behind it, called
  from this process at the same concurrency with a message the size of a serialized TradeSignal
  ({payload} bytes): the most this stack moves on this machine. The mesh's ratio is to the unary
  echo (SubmitSignal) and to the bidirectional echo with the same window (SubmitSignals).
- **routing**: `QuoteRoute` (permission check and routing decision, nothing placed) at concurrency
  {routing_c}. The in-mesh figure is read from the router's `nija_routing_latency_seconds`
  histogram during the sustained run: the upper bound of the bucket holding the p99 (bucket
  resolution, not a measurement).
- **noisy**: {quiet} quiet users each send 1 signal/s for {noisy_s} s in each of three conditions:
  alone; beside a neighbour trading steadily just under its rate limit; beside a neighbour
  flooding at concurrency {flood_c} from a process of its own, whose rate limit binds (its
  refusals are counted). The conditions alternate in {windows} windows each, so a shared
  machine's drift weighs on all alike. "At its limit / alone" is what a neighbour's permitted
  trades cost the others (shared CPU); "flooded / at its limit" is what its excess costs, which
  is the isolation being measured.
- **scale**: a fresh mesh with {factor}x the users and signals, same concurrency; peak RSS (VmHWM)
  per service at 1x and {factor}x. Sub-linear: every service grows by less than the users factor.
- Users are created through `AdminService/PutUser` with realistic limits that a run never reaches
  (the flood user's rate limit aside). They hold no exchange API keys: the simulated venues trade
  for any account, so none are needed.
- CPU seconds are utime + stime from /proc/<pid>/stat of each service process (and of this
  process for the load generator); peak RSS is each process's VmHWM.
"""


def table_rows(checks: Sequence[Check]) -> list[tuple[str, str, str, str, str]]:
    return [(c.group, c.name, c.shown(), c.target, c.verdict) for c in checks]


def render_table(checks: Sequence[Check]) -> str:
    """The figures as a plain-text table for the terminal."""
    header = ("group", "figure", "value", "target", "")
    rows = [header, *table_rows(checks)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def service_rows(result: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """(service, CPU s, peak RSS MB at 1x[, at Nx, growth, MB per 1,000 users]) per service, and the
    load generator's CPU last."""
    cpu = get(result, "services.cpu_s") or {}
    rss = get(result, "services.peak_rss_mb") or {}
    scale = get(result, "scale") or {}
    scaled, grown, per_k = scale.get("rss_mb") or {}, scale.get("rss_growth") or {}, scale.get("mb_per_1000_users") or {}
    rows: list[tuple[str, ...]] = []
    for name in sorted(set(cpu) | set(rss) | set(scaled)):
        row: tuple[str, ...] = (name, _num(cpu.get(name), 2), _num(rss.get(name), 1))
        if scaled:
            row += (_num(scaled.get(name), 1), _num(grown.get(name), 2), _num(per_k.get(name), 2))
        rows.append(row)
    if rows:
        rows.append(("load generator (this process)", _num(get(result, "load_generator.cpu_s"), 2), "",
                     *(("", "", "") if scaled else ())))
    return rows


def service_header(result: Mapping[str, Any]) -> tuple[str, ...]:
    header: tuple[str, ...] = ("service", "CPU s (1x mesh)", "peak RSS MB (1x)")
    if get(result, "scale.rss_mb"):
        factor = get(result, "scale.factor")
        header += (f"peak RSS MB ({factor}x)", "RSS growth", "MB per 1,000 users")
    return header


def _num(value: Any, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def render_services(result: Mapping[str, Any]) -> str:
    """What each process spent, as a plain-text table for the terminal."""
    rows = [service_header(result), *service_rows(result)]
    if len(rows) == 1:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in rows)


def _services_table(result: Mapping[str, Any]) -> list[str]:
    rows = service_rows(result)
    if not rows:
        return []
    header = service_header(result)
    return ["## Per service", "", "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|",
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def render_markdown(result: Mapping[str, Any], checks: Sequence[Check]) -> str:
    machine = result.get("machine", {})
    config = result.get("config", {})
    lines = [
        "# nija bench",
        "",
        f"{result.get('started_utc', '')}: {machine.get('nproc', '?')} CPUs, Python {machine.get('python', '?')}, "
        f"grpcio {machine.get('grpcio', '?')}; venue latency {config.get('venue_latency_ms', 0)} ms; "
        f"modes {', '.join(config.get('modes', []))}.",
        "",
        "| group | figure | value | target | |",
        "|---|---|---:|---|---|",
        *(f"| {g} | {n} | {v} | {t} | {'**FAIL**' if ok == 'FAIL' else ok} |" for g, n, v, t, ok in table_rows(checks)),
        "",
    ]
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    if result.get("notes"):
        lines.append("")
    lines += _services_table(result)
    calls = get(result, "sustained.calls_per_signal") or {}
    if calls:
        lines += ["## Calls per signal (sustained, unary)", "",
                  f"{sum(calls.values()):.2f} calls handled per signal in all (health checks left out; a long-lived "
                  "stream such as RecordUpdates counts once, not per message).", "",
                  "| server | method | calls per signal |", "|---|---|---:|",
                  *(f"| {k.split(' ', 1)[0]} | {k.split(' ', 1)[1]} | {v:.2f} |" for k, v in calls.items()), ""]
    outcomes = [(mode, get(result, f"{mode}.outcomes")) for mode in ("burst", "sustained", "stream", "scale")]
    if any(o for _, o in outcomes):
        lines += ["## Outcomes", ""]
        lines += [f"- {mode}: " + ", ".join(f"{k} {v}" for k, v in sorted(o.items())) for mode, o in outcomes if o]
        lines.append("")
    lines.append(EXPLANATIONS.format(
        signals=config.get("signals"), concurrency=config.get("concurrency"), streams=config.get("streams"),
        payload=get(result, "baseline.payload_bytes") or "?", routing_c=get(result, "routing.concurrency") or 100,
        quiet=get(result, "noisy.quiet_users") or config.get("quiet_users"),
        noisy_s=config.get("noisy_s"), windows=config.get("noisy_windows"), flood_c=config.get("flood_concurrency"), factor=config.get("scale_factor"),
    ))
    charts = result.get("charts") or []
    if charts:
        lines += ["", *(f"![{c}]({c})" for c in charts)]
    return "\n".join(lines) + "\n"


def write_charts(result: Mapping[str, Any], out_dir: pathlib.Path) -> tuple[list[str], str]:
    """latency.png (submit -> terminal histograms, unary and stream) and throughput.png
    (completions per 0.5 s). Returns (files written, a note when they were skipped)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (pip install 'nija-mesh[bench]'): no PNG charts"
    written = []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    plotted = False
    span: list[float] = []
    for mode, label in (("sustained", "SubmitSignal"), ("stream", "SubmitSignals")):
        hist = get(result, f"{mode}.terminal_histogram")
        if not hist or not sum(hist["counts"]):
            continue
        edges, counts = hist["edges_ms"], hist["counts"]
        ax.stairs(counts, edges, label=label, fill=False, linewidth=1.5)
        used = [i for i, c in enumerate(counts) if c]
        span += [edges[used[0]], edges[used[-1] + 1]]
        plotted = True
    ax.set_xscale("log")
    if span:  # the buckets that hold samples, not the whole 0.1 ms .. 100 s range
        ax.set_xlim(min(span) / 1.5, max(span) * 1.5)
    written.append(_save(plt, fig, ax, plotted, out_dir / "latency.png", "submit -> terminal (ms, log scale)",
                         "signals", "Latency, submit -> terminal update"))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    plotted = False
    for mode, label in (("sustained", "SubmitSignal"), ("stream", "SubmitSignals")):  # the long scale run would squash these
        series = get(result, f"{mode}.throughput_series")
        if not series:
            continue
        step = series[1][0] - series[0][0] if len(series) > 1 else 0.5
        ax.plot([t for t, _ in series], [c / step for _, c in series], label=label, drawstyle="steps-post")
        plotted = True
    written.append(_save(plt, fig, ax, plotted, out_dir / "throughput.png", "seconds since the phase started",
                         "completed signals / s", "Throughput over time (per 0.5 s)"))
    return written, ""


def _save(plt: Any, fig: Any, ax: Any, plotted: bool, path: pathlib.Path, xlabel: str, ylabel: str, title: str) -> str:
    """Label a chart, write it as `path` and free it; its file name."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if plotted:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
