"""`nija bench`'s orchestration: start the mesh, seed the users, run each mode, measure what every
process spent, and hand the figures to `targets` and `report`.

One mesh serves burst, sustained, stream, routing and noisy in that order (each phase's CPU is
its own delta); the bare echo runs after that mesh is stopped, so it has the machine the mesh
had; the scale run gets a fresh mesh of its own (its peak RSS must not inherit the 1x run's).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
from nija.common.v1 import common_pb2

from services.bench import load, report, stats, targets
from services.bench.mesh import RunningMesh, Usage, cpu_deltas, sample, start_mesh
from services.status.promtext import parse_metrics

MODES = ("burst", "sustained", "stream", "routing", "noisy", "scale")
ROUTING_HISTOGRAM = "nija_routing_latency_seconds_bucket"
RATE_LIMIT_WAITS = "nija_rate_limit_waits_total"
RPC_CALLS = "nija_rpc_calls_total"
LATENCY_EDGES_MS = stats.log_edges(0.1, 100_000.0, 20)
MB = 1024.0  # VmHWM is in kB
NOISY_SETTLE_S = 1.0  # before each noisy window: the last window's calls gone
# Before a flooded window: the flood at full speed, its rate-limit burst (refilled while it was
# paused) spent, so each window sees the flood's steady state, as a flood that never paused would.
FLOOD_LEAD_S = 2.5
NOISY_CONDITIONS = ("alone", "at_limit", "flooded")
# The steady neighbour: just under the bench users' rate limit (load.limits), so never refused.
NEIGHBOUR_AT_LIMIT_PER_S = 19.0


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    users: int = 1000
    signals: int = 5_000
    concurrency: int = 200
    burst: int = 1000
    venue_latency_ms: float = 0.0
    modes: tuple[str, ...] = MODES
    quick: bool = False
    #: SubmitSignals: the same window over this many streams.
    streams: int = 4
    quotes: int = 5000
    routing_concurrency: int = targets.ROUTING_AT_CONCURRENCY
    quiet_users: int = 50
    #: Seconds the quiet users trade in each condition, split into this many windows per condition.
    noisy_s: float = 20.0
    noisy_windows: int = 4
    flood_concurrency: int = 100
    scale_factor: int = 10
    #: The executors keep the exchanges' published request budgets (per account and per IP).
    venue_rate_limits: bool = True
    warmup: int = 200

    def __post_init__(self) -> None:
        unknown = set(self.modes) - set(MODES)
        if unknown:
            raise ValueError(f"unknown mode(s) {', '.join(sorted(unknown))}; known: {', '.join(MODES)}")
        for name in ("users", "signals", "concurrency", "burst", "streams", "quotes", "quiet_users",
                     "noisy_windows", "flood_concurrency", "scale_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.venue_latency_ms < 0 or self.noisy_s <= 0:
            raise ValueError("venue latency must be >= 0 and the noisy duration > 0")

    @classmethod
    def quick_figures(cls) -> dict[str, Any]:
        """A smoke run's figures: small enough for a test, every mode still exercised."""
        return {"users": 100, "signals": 300, "burst": 200, "quotes": 500, "noisy_s": 5.0, "noisy_windows": 2,
                "scale_factor": 3, "quiet_users": 10, "warmup": 50}

    def mesh_settings(self) -> dict[str, dict[str, str]]:
        settings: dict[str, dict[str, str]] = {}
        if self.venue_latency_ms:
            settings["simexchange"] = {"latency_ms": f"{self.venue_latency_ms:g}"}
        if not self.venue_rate_limits:
            for broker in load.BROKERS:
                settings[f"executor-{broker}"] = {"rate_limits": "off"}
        return settings


# ---- progress ----------------------------------------------------------------------------------


class Phases:
    """One progress bar per phase on stderr (rich), or nothing at all."""

    def __init__(self, enabled: bool) -> None:
        self._progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(stderr=True))

    def __enter__(self) -> Phases:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress:
            self._progress.stop()

    @contextlib.contextmanager
    def phase(self, name: str, total: float | None = None) -> Iterator[Callable[[], None]]:
        """A callable that advances this phase by one; the bar is completed on leaving."""
        if self._progress is None:
            yield lambda: None
            return
        progress = self._progress
        task = progress.add_task(name, total=total)
        try:
            yield lambda: progress.advance(task)
        finally:
            progress.update(task, completed=total if total is not None else 1, total=total or 1)


# ---- figures from raw results ------------------------------------------------------------------


def _pct(samples: list[int]) -> dict[str, Any] | None:
    p = stats.percentiles(samples)
    return p.to_dict() if p else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def load_figures(res: load.LoadResult, cpu: Mapping[str, float] | None = None) -> dict[str, Any]:
    """A load phase as result.json holds it: counts, rates, percentiles, histogram and series."""
    filled = res.outcomes.get("filled", 0)
    out: dict[str, Any] = {
        "sent": res.sent,
        "elapsed_s": round(res.elapsed_s, 3),
        "filled": filled,
        "ended": res.ended,
        "success_pct": round(100.0 * filled / res.sent, 2) if res.sent else None,
        "throughput_per_s": round(stats.rate(res.ended, res.elapsed_s), 1),
        "outcomes": dict(res.outcomes),
        "updates_per_signal": round(res.updates / res.ended, 2) if res.ended else None,
        "first": _pct(res.first_ns),
        "terminal": _pct(res.terminal_ns),
        "terminal_histogram": {
            "edges_ms": LATENCY_EDGES_MS,
            "counts": stats.histogram((ns / stats.NS_PER_MS for ns in res.terminal_ns), LATENCY_EDGES_MS),
        },
        "throughput_series": stats.throughput_series(res.completions_s, 0.5),
        "client_cpu_s": res.client_cpu_s,
    }
    if cpu is not None:
        out["services_cpu_s"] = dict(cpu)
        out["mesh_cpu_ms_per_signal"] = round(1000 * sum(cpu.values()) / res.sent, 3) if res.sent else None
    return out


def rss_mb(usage: Mapping[str, Usage]) -> dict[str, float]:
    return {name: round(u.peak_rss_kb / MB, 1) for name, u in sorted(usage.items())}


def growth(small: Mapping[str, float], large: Mapping[str, float]) -> dict[str, float]:
    return {name: round(large[name] / small[name], 3) for name in large if small.get(name)}


def routing_histogram(metrics_text: str) -> dict[float, float]:
    """{le (s): cumulative count} of the router's decision-latency histogram."""
    samples = parse_metrics(metrics_text)
    out: dict[float, float] = {}
    for labels, value in samples.series(ROUTING_HISTOGRAM).items():
        le = float(dict(labels)["le"])
        out[le] = out.get(le, 0.0) + value
    return out


def in_mesh_routing(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    delta = stats.bucket_delta(before, after)
    q = {f"p{int(p * 100)}_le_ms": stats.bucket_quantile(delta, p) for p in (0.5, 0.9, 0.99)}
    return {
        **{k: (None if v is None else (v * 1000 if math.isfinite(v) else "inf")) for k, v in q.items()},
        "decisions": int(max(delta.values(), default=0)),
        "resolution": "bucket upper bounds (ms): " + ", ".join(f"{le * 1000:g}" for le in sorted(delta) if math.isfinite(le)),
    }


def calls_per_signal(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]], signals: int
) -> dict[str, float]:
    """{"<service> <Service/Method>": calls handled per signal} between two scrapes of
    nija_rpc_calls_total, busiest first; health checks and calls under 0.01 per signal left out."""
    out: dict[str, float] = {}
    for service, methods in after.items():
        for method, count in methods.items():
            per = (count - before.get(service, {}).get(method, 0.0)) / signals if signals else 0.0
            if per >= 0.01 and not method.startswith("/grpc."):
                out[f"{service} {method.strip('/').split('.')[-1]}"] = round(per, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# ---- I/O helpers -------------------------------------------------------------------------------


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return response.read().decode()


def rpc_calls(mesh: RunningMesh) -> dict[str, dict[str, float]]:
    """{service: {method: calls handled}} from every process's nija_rpc_calls_total."""
    out = {}
    for name, address in mesh.metrics.items():
        series = parse_metrics(scrape(address)).series(RPC_CALLS)
        out[name] = {dict(labels)["method"]: value for labels, value in series.items()}
    return out


def rate_limit_waits(mesh: RunningMesh) -> dict[str, int]:
    """{broker: venue requests that waited for the exchange's request budget}: whether the
    exchanges' published limits, not the mesh, set the pace."""
    return {
        name.removeprefix("executor-"): int(parse_metrics(scrape(address)).total(RATE_LIMIT_WAITS))
        for name, address in mesh.metrics.items() if name.startswith("executor-")
    }


@contextlib.contextmanager
def echo_server(run_dir: pathlib.Path) -> Iterator[tuple[str, int]]:
    """The bare echo server as its own process: (target, pid)."""
    port_file = run_dir / "echo.port"
    process = subprocess.Popen([sys.executable, "-m", "services.bench.echo", "--port-file", str(port_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare echo server did not start")
            time.sleep(0.05)
        yield f"127.0.0.1:{int(port_file.read_text())}", process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "python": platform.python_version(), "grpcio": grpc.__version__,
            "platform": platform.platform(), "machine": platform.machine()}


# ---- the run -----------------------------------------------------------------------------------


class Bench:
    def __init__(self, config: BenchConfig, phases: Phases, work_dir: pathlib.Path) -> None:
        self.config = config
        self.phases = phases
        self.work_dir = work_dir
        self.signals = load.Signals(run_id=secrets.token_hex(3))
        self.notes: list[str] = []
        self.result: dict[str, Any] = {}

    def wants(self, mode: str) -> bool:
        return mode in self.config.modes

    async def run(self) -> dict[str, Any]:
        c = self.config
        cpu0 = time.process_time()
        self.result = {
            "version": 1,
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "config": {**dataclasses.asdict(c), "modes": list(c.modes)},
            "notes": self.notes,
        }
        if not c.venue_rate_limits:
            self.notes.append("the executors' exchange request budgets were off (--no-venue-rate-limits)")
        try:
            if any(self.wants(m) for m in MODES if m != "scale"):
                await self._first_mesh()
            if self.wants("sustained") or self.wants("stream"):
                await self._baseline()
            if self.wants("scale"):
                await self._scale()
        except Exception as exc:  # noqa: BLE001 - what was measured is still written, with why it stopped
            self.result["error"] = f"{type(exc).__name__}: {exc}"
            self.notes.append(f"the run stopped early: {self.result['error']}")
        self.result["load_generator"] = {"cpu_s": round(time.process_time() - cpu0, 3)}
        return self.result

    async def _start(self, name: str) -> RunningMesh:
        with self.phases.phase(f"start the mesh ({name})"):
            return await asyncio.to_thread(start_mesh, self.work_dir / name, self.config.mesh_settings())

    async def _users(self, mesh: RunningMesh, names: list[str], risk: Any, label: str) -> None:
        with self.phases.phase(label, total=1):
            await load.make_users(mesh.targets["permission"], mesh.admin, names, risk)

    async def _warm_up(self, mesh: RunningMesh, users: list[str]) -> None:
        with self.phases.phase("warm-up", total=self.config.warmup) as tick:
            await load.run_unary(mesh.targets["router"], mesh.admin,
                                 self.signals.batch("warm", users, self.config.warmup), 50, tick)

    async def _first_mesh(self) -> None:
        c = self.config
        mesh = await self._start("mesh-1x")
        try:
            users = [f"bench-u{i:05d}" for i in range(max(c.users, c.burst))]
            await self._users(mesh, users, load.limits(), f"seed {len(users)} users")
            start = sample(mesh.pids)
            if self.wants("burst"):
                await self._burst(mesh, users[: c.burst])
            await self._warm_up(mesh, users[: c.users])
            if self.wants("sustained"):
                await self._sustained(mesh, users[: c.users])
            self.result["rss_after_sustained_mb"] = rss_mb(sample(mesh.pids))
            if self.wants("stream"):
                await self._stream(mesh, users[: c.users])
            if self.wants("routing"):
                await self._routing(mesh, users[: c.users])
            if self.wants("noisy"):
                await self._noisy(mesh)
            end = sample(mesh.pids)
            self.result["services"] = {
                "pids": dict(mesh.pids),
                "cpu_s": cpu_deltas(start, end),
                "peak_rss_mb": rss_mb(end),
            }
            missing = set(mesh.targets) - set(end)
            if missing:
                self.notes.append(f"no /proc figures for {', '.join(sorted(missing))}")
        finally:
            await asyncio.to_thread(mesh.stop)

    async def _measured(self, mesh: RunningMesh, work: Any) -> tuple[Any, dict[str, float]]:
        before = sample(mesh.pids)
        out = await work
        return out, cpu_deltas(before, sample(mesh.pids))

    async def _burst(self, mesh: RunningMesh, users: list[str]) -> None:
        batch = [self.signals.make("burst", u, common_pb2.SIGNAL_TYPE_ENTRY) for u in users]
        with self.phases.phase(f"burst ({len(batch)} at once)", total=len(batch)) as tick:
            res, cpu = await self._measured(mesh, load.run_burst(mesh.targets["router"], mesh.admin, batch, tick))
        self.result["burst"] = {"size": len(batch), **load_figures(res, cpu)}

    async def _sustained(self, mesh: RunningMesh, users: list[str]) -> None:
        c = self.config
        router_metrics = mesh.metrics["router"]
        before = routing_histogram(await asyncio.to_thread(scrape, router_metrics))
        waits_before = await asyncio.to_thread(rate_limit_waits, mesh)
        calls_before = await asyncio.to_thread(rpc_calls, mesh)
        with self.phases.phase(f"sustained (unary, c={c.concurrency})", total=c.signals) as tick:
            res, cpu = await self._measured(mesh, load.run_unary(
                mesh.targets["router"], mesh.admin, self.signals.batch("unary", users, c.signals), c.concurrency, tick))
        after = routing_histogram(await asyncio.to_thread(scrape, router_metrics))
        waits = await asyncio.to_thread(rate_limit_waits, mesh)
        calls = calls_per_signal(calls_before, await asyncio.to_thread(rpc_calls, mesh), c.signals)
        self.result["sustained"] = {"signals": c.signals, "concurrency": c.concurrency, **load_figures(res, cpu),
                                    "calls_per_signal": calls,
                                    "routing_in_mesh": in_mesh_routing(before, after),
                                    "venue_rate_limit_waits": {b: waits[b] - waits_before.get(b, 0) for b in waits}}

    async def _stream(self, mesh: RunningMesh, users: list[str]) -> None:
        c = self.config
        with self.phases.phase(f"stream (window {c.concurrency})", total=c.signals) as tick:
            try:
                res, cpu = await self._measured(mesh, load.run_stream(
                    mesh.targets["router"], mesh.admin, self.signals.batch("stream", users, c.signals),
                    c.concurrency, c.streams, tick))
            except load.NotAvailable as exc:
                self.result["stream"] = {"available": False, "note": f"not available: {exc}"}
                self.notes.append(f"stream: not available ({exc})")
                return
        self.result["stream"] = {"available": True, "signals": c.signals, "window": c.concurrency,
                                 "streams": min(c.streams, c.concurrency), **load_figures(res, cpu)}

    async def _routing(self, mesh: RunningMesh, users: list[str]) -> None:
        c = self.config
        router = mesh.targets["router"]
        await load.run_quotes(router, mesh.admin, self.signals.batch("qwarm", users, 200, common_pb2.SIGNAL_TYPE_ENTRY),
                              c.routing_concurrency)
        with self.phases.phase(f"routing (QuoteRoute, c={c.routing_concurrency})", total=c.quotes) as tick:
            started = time.perf_counter()
            samples, cpu = await self._measured(mesh, load.run_quotes(
                router, mesh.admin, self.signals.batch("quote", users, c.quotes, common_pb2.SIGNAL_TYPE_ENTRY),
                c.routing_concurrency, tick))
            elapsed = time.perf_counter() - started
        self.result["routing"] = {"quotes": c.quotes, "concurrency": c.routing_concurrency,
                                  "latency": _pct(samples), "throughput_per_s": round(stats.rate(len(samples), elapsed), 1),
                                  "services_cpu_s": cpu}

    async def _noisy(self, mesh: RunningMesh) -> None:
        c = self.config
        quiet = [f"bench-quiet-{k:03d}" for k in range(c.quiet_users)]
        flooder, steady = "bench-flood", "bench-steady"
        await load.make_users(mesh.targets["permission"], mesh.admin, quiet, load.limits())
        await load.make_users(mesh.targets["permission"], mesh.admin, [flooder, steady], load.limits())
        router = mesh.targets["router"]

        def make(user: str) -> common_pb2.TradeSignal:
            return self.signals.make("noisy", user)

        # One signal each first: a user's first trade warms caches (permissions, keys) in every service.
        await load.run_unary(router, mesh.admin, [make(u) for u in quiet + [steady]], len(quiet) + 1)
        # Three conditions: the quiet users alone; with a neighbour trading steadily just under
        # its rate limit; with a neighbour flooding at full speed. The second separates what the
        # neighbour's permitted trades cost everyone (CPU) from what its excess costs. They
        # alternate in windows (alone, at limit, flooded, flooded, at limit, alone, ...), so a
        # shared machine's drift in speed weighs on all alike: the ratios are measured in one run.
        window_s = c.noisy_s / c.noisy_windows
        runs = {condition: load.LoadResult() for condition in NOISY_CONDITIONS}
        neighbour = load.LoadResult()
        expected = len(runs) * c.noisy_windows * int(c.quiet_users * window_s)
        flood = load.FloodProcess(router, mesh.admin, flooder, self.signals.run_id, c.flood_concurrency)
        with self.phases.phase(f"noisy: {c.quiet_users} quiet users, alone and beside a busy neighbour",
                               total=expected) as tick:
            await flood.ready()
            for k in range(c.noisy_windows):
                for condition in NOISY_CONDITIONS[:: 1 if k % 2 == 0 else -1]:
                    flood.flood(condition == "flooded")
                    await asyncio.sleep(FLOOD_LEAD_S if condition == "flooded" else NOISY_SETTLE_S)
                    quiet_run = load.run_paced(router, mesh.admin, quiet, make, 1.0, window_s, tick)
                    if condition == "at_limit":
                        window, steady_run = await asyncio.gather(quiet_run, load.run_paced(
                            router, mesh.admin, [steady], make, NEIGHBOUR_AT_LIMIT_PER_S, window_s))
                        neighbour.absorb(steady_run)
                    else:
                        window = await quiet_run
                    runs[condition].absorb(window)
            flood_res = await flood.finish()
        p99 = {condition: p.p99 if (p := stats.percentiles(run.terminal_ns)) else None
               for condition, run in runs.items()}
        refusals = {k: v for k, v in flood_res.outcomes.items() if k.startswith("refused:")}
        self.result["noisy"] = {
            "quiet_users": c.quiet_users, "duration_s": c.noisy_s, "windows": c.noisy_windows,
            "flood_concurrency": c.flood_concurrency, "neighbour_at_limit_per_s": NEIGHBOUR_AT_LIMIT_PER_S,
            **{condition: {"terminal": _pct(run.terminal_ns), "outcomes": dict(run.outcomes)}
               for condition, run in runs.items()},
            "p99_ratio": _ratio(p99["flooded"], p99["alone"]),
            "at_limit_p99_ratio": _ratio(p99["at_limit"], p99["alone"]),
            "flooded_vs_at_limit_p99_ratio": _ratio(p99["flooded"], p99["at_limit"]),
            "neighbour_at_limit": {"sent": neighbour.sent, "filled": neighbour.outcomes.get("filled", 0),
                                   "outcomes": dict(neighbour.outcomes)},
            "flood": {"sent": flood_res.sent, "filled": flood_res.outcomes.get("filled", 0),
                      "refused": sum(refusals.values()), "outcomes": dict(flood_res.outcomes),
                      "per_s": round(stats.rate(flood_res.sent, flood_res.elapsed_s), 1)},
        }

    async def _baseline(self) -> None:
        c = self.config
        payload = self.signals.make("echo", "bench-u00000").SerializeToString()
        count = max(c.signals, 5000)
        with self.phases.phase("bare grpc.aio echo", total=2) as tick, echo_server(self.work_dir) as (target, _pid):
            await load.run_echo(target, payload, 500, c.concurrency)  # warm-up
            unary = await load.run_echo(target, payload, count, c.concurrency)
            tick()
            streamed = await load.run_echo(target, payload, count, c.concurrency, streams=min(c.streams, c.concurrency))
            tick()
        self.result["baseline"] = {"payload_bytes": len(payload), "calls": count, "concurrency": c.concurrency,
                                   "unary_per_s": round(unary, 1), "stream_per_s": round(streamed, 1)}
        for mode, rate in (("sustained", unary), ("stream", streamed)):
            figures = self.result.get(mode)
            if figures and figures.get("throughput_per_s") is not None:
                figures["echo_ratio"] = round(stats.ratio(figures["throughput_per_s"], rate) or 0.0, 4)

    async def _scale(self) -> None:
        c = self.config
        users = [f"bench-s{i:06d}" for i in range(c.users * c.scale_factor)]
        count = c.signals * c.scale_factor
        mesh = await self._start(f"mesh-{c.scale_factor}x")
        try:
            await self._users(mesh, users, load.limits(), f"seed {len(users)} users ({c.scale_factor}x)")
            await self._warm_up(mesh, users)
            with self.phases.phase(f"scale {c.scale_factor}x (unary, c={c.concurrency})", total=count) as tick:
                res, cpu = await self._measured(mesh, load.run_unary(
                    mesh.targets["router"], mesh.admin, self.signals.batch("scale", users, count), c.concurrency, tick))
            large = rss_mb(sample(mesh.pids))
        finally:
            await asyncio.to_thread(mesh.stop)
        small = self.result.get("rss_after_sustained_mb") or {}
        one_x = get_rate(self.result)
        self.result["scale"] = {
            "factor": c.scale_factor, "users": len(users), "signals": count, **load_figures(res, cpu),
            "rss_1x_mb": small, "rss_mb": large, "rss_growth": growth(small, large),
            "mb_per_1000_users": {n: round(1000 * (large[n] - small[n]) / (len(users) - c.users), 2)
                                  for n in large if n in small},
        }
        self.result["scale"]["throughput_ratio"] = (
            round(res.ended / res.elapsed_s / one_x, 3) if one_x and res.elapsed_s else None)
        if not small:
            self.notes.append("scale: no 1x sustained run to compare with (add sustained to --modes)")


def get_rate(result: Mapping[str, Any]) -> float | None:
    return targets.get(result, "sustained.throughput_per_s")


# ---- entry -------------------------------------------------------------------------------------


def run_bench(config: BenchConfig, out_dir: pathlib.Path, progress: bool) -> tuple[dict[str, Any], list[targets.Check]]:
    """Run every mode, write result.json, report.md and the PNGs to `out_dir`, and return the
    result with its checks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nija-bench-") as tmp, Phases(progress) as phases:
        result = asyncio.run(Bench(config, phases, pathlib.Path(tmp)).run())
    charts, note = report.write_charts(result, out_dir)
    result["charts"] = charts
    if note:
        result["notes"].append(note)
    checks = targets.evaluate(result)
    result["targets"] = [c.to_dict() for c in checks]
    (out_dir / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out_dir / "report.md").write_text(report.render_markdown(result, checks))
    return result, checks
