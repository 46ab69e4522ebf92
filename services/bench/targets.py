"""Issue 10's targets, and every other figure of a run, as rows: (name, value, target, verdict).

Pure: reads the result dict `run` builds (the same one written to result.json), so a saved run
can be re-evaluated and re-rendered. A figure that was not measured (its mode not run, or the
mesh does not serve that API) has no value and verdict "n/a"; a figure with no target has none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

#: The issue's figures (a 2-core machine; every service, exchange and the load generator on it).
BURST_MAX_S = 2.0
SUSTAINED_MIN_RATIO = 0.25
STREAM_MIN_RATIO = 0.5
ROUTING_P99_MAX_MS = 5.0
ROUTING_AT_CONCURRENCY = 100
TERMINAL_P99_MAX_MS = 250.0
TERMINAL_AT_CONCURRENCY = 200
NOISY_MAX_RATIO = 1.5
SCALE_MIN_THROUGHPUT_RATIO = 0.8
PEAK_RSS_MAX_MB = 150.0
RSS_AT_USERS = 1000


@dataclasses.dataclass(frozen=True)
class Check:
    group: str
    name: str
    value: float | None
    unit: str = ""
    target: str = ""
    #: True/False against the target; None when there is no target or nothing was measured.
    ok: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        return "" if self.ok is None else ("PASS" if self.ok else "FAIL")

    def shown(self) -> str:
        """The value as the table prints it."""
        if self.value is None:
            return "not available" if self.note else "-"
        if self.unit == "%":
            return f"{self.value:.1f} %"
        if self.unit == "x":
            return f"{self.value:.3f}x"
        if isinstance(self.value, int) or float(self.value).is_integer() and abs(self.value) >= 100:
            return f"{self.value:,.0f} {self.unit}".strip()
        return f"{self.value:,.2f} {self.unit}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "verdict": self.verdict}


def get(result: Mapping[str, Any], path: str) -> Any:
    """result["a"]["b"]... for "a.b...", None when any step is missing."""
    node: Any = result
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _check(group: str, name: str, value: Any, unit: str = "", target: str = "",
           passes: Callable[[float], bool] | None = None, note: str = "") -> Check:
    ok = None if value is None or passes is None else bool(passes(value))
    return Check(group, name, value, unit, target, ok, note)


def evaluate(result: Mapping[str, Any]) -> list[Check]:
    """Every figure of the run, the targeted ones with their verdict."""
    checks: list[Check] = []
    add = checks.append

    # 1. burst
    burst = get(result, "burst") or {}
    size = burst.get("size")
    add(_check("burst", "completion time", burst.get("elapsed_s"), "s", f"< {BURST_MAX_S:g} s",
               lambda v: v < BURST_MAX_S))
    add(_check("burst", "filled", burst.get("filled"), "signals", f"= {size}" if size else "",
               (lambda v: v == size) if size else None))
    add(_check("burst", "success rate", burst.get("success_pct"), "%", "100 %", lambda v: v >= 100.0))
    add(_check("burst", "throughput", burst.get("throughput_per_s"), "signals/s"))
    add(_check("burst", "submit -> terminal p99", get(burst, "terminal.p99"), "ms"))

    # 2 and 3. sustained, unary and streaming, against the bare echo
    concurrency = get(result, "config.concurrency")
    at_c = concurrency == TERMINAL_AT_CONCURRENCY
    for mode, label in (("sustained", "SubmitSignal"), ("stream", "SubmitSignals")):
        figures = get(result, mode) or {}
        note = figures.get("note", "") if figures.get("available") is False else ""
        add(_check(mode, f"{label} throughput", figures.get("throughput_per_s"), "signals/s", note=note))
        minimum = SUSTAINED_MIN_RATIO if mode == "sustained" else STREAM_MIN_RATIO
        add(_check(mode, f"{label} / bare echo", figures.get("echo_ratio"), "x", f">= {minimum:g}x",
                   lambda v, m=minimum: v >= m, note=note))
        add(_check(mode, "filled", figures.get("filled"), "signals",
                   f"= {figures['sent']}" if figures.get("sent") else "",
                   (lambda v, n=figures.get("sent"): v == n) if figures.get("sent") else None, note=note))
        add(_check(mode, "submit -> first update p99", get(figures, "first.p99"), "ms", note=note))
        terminal_target = f"< {TERMINAL_P99_MAX_MS:g} ms" if at_c else f"(< {TERMINAL_P99_MAX_MS:g} ms at {TERMINAL_AT_CONCURRENCY})"
        add(_check(mode, f"submit -> terminal p99 (concurrency {concurrency})", get(figures, "terminal.p99"), "ms",
                   terminal_target if mode == "sustained" else "",
                   (lambda v: v < TERMINAL_P99_MAX_MS) if mode == "sustained" and at_c else None, note=note))
        add(_check(mode, "mesh CPU per signal", figures.get("mesh_cpu_ms_per_signal"), "ms", note=note))
        if mode == "sustained":  # did the exchanges' published request budgets, not the mesh, set the pace?
            waits = figures.get("venue_rate_limit_waits")
            add(_check(mode, "venue requests that waited for exchange budget",
                       sum(waits.values()) if waits else None, "requests"))
    add(_check("baseline", "bare echo, unary", get(result, "baseline.unary_per_s"), "calls/s"))
    add(_check("baseline", "bare echo, bidi stream", get(result, "baseline.stream_per_s"), "calls/s"))

    # 3. the routing decision
    routing = get(result, "routing") or {}
    at = routing.get("concurrency")
    add(_check("routing", f"QuoteRoute p50 (concurrency {at})", get(routing, "latency.p50"), "ms"))
    add(_check("routing", f"QuoteRoute p99 (concurrency {at})", get(routing, "latency.p99"), "ms",
               f"< {ROUTING_P99_MAX_MS:g} ms", lambda v: v < ROUTING_P99_MAX_MS))
    add(_check("routing", "QuoteRoute max", get(routing, "latency.max"), "ms"))
    add(_check("routing", "in-mesh decision p99 (histogram bucket bound)",
               get(result, "sustained.routing_in_mesh.p99_le_ms"), "ms"))

    # 4. the noisy neighbour
    noisy = get(result, "noisy") or {}
    add(_check("noisy", "quiet users' p99, alone", get(noisy, "alone.terminal.p99"), "ms"))
    add(_check("noisy", "quiet users' p99, a neighbour trading at its limit", get(noisy, "at_limit.terminal.p99"), "ms"))
    add(_check("noisy", "quiet users' p99, a neighbour flooding", get(noisy, "flooded.terminal.p99"), "ms"))
    add(_check("noisy", "flooded / alone p99", noisy.get("p99_ratio"), "x", f"<= {NOISY_MAX_RATIO:g}x",
               lambda v: v <= NOISY_MAX_RATIO))
    add(_check("noisy", "at its limit / alone p99 (what permitted trades cost)", noisy.get("at_limit_p99_ratio"), "x"))
    add(_check("noisy", "flooded / at its limit p99 (what the excess costs)",
               noisy.get("flooded_vs_at_limit_p99_ratio"), "x"))
    add(_check("noisy", "flood signals refused (rate limit)", get(noisy, "flood.refused"), "signals"))

    # 5. scaling
    scale = get(result, "scale") or {}
    add(_check("scale", f"throughput {scale.get('factor', '?')}x / 1x", scale.get("throughput_ratio"), "x",
               f">= {SCALE_MIN_THROUGHPUT_RATIO:g}x", lambda v: v >= SCALE_MIN_THROUGHPUT_RATIO))
    growth = scale.get("rss_growth") or {}
    if growth:
        worst = max(growth, key=growth.get)
        users_factor = scale.get("factor")
        add(_check("scale", f"peak RSS growth, largest ({worst})", growth[worst], "x",
                   f"< {users_factor}x (sub-linear)", lambda v: v < users_factor))
    else:
        add(_check("scale", "peak RSS growth", None, "x", "< users factor (sub-linear)"))

    # 6. memory at 1,000 users
    rss = get(result, "services.peak_rss_mb") or {}
    users = get(result, "config.users")
    if rss:
        worst = max(rss, key=rss.get)
        add(_check("memory", f"peak RSS per service, largest ({worst}) at {users} users", rss[worst], "MB",
                   f"< {PEAK_RSS_MAX_MB:g} MB", lambda v: v < PEAK_RSS_MAX_MB))
    add(_check("load generator", "CPU seconds (the bench process)", get(result, "load_generator.cpu_s"), "s"))
    return checks


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.ok is False]
