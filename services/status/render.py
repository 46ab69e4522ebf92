"""The view model as a rich table: one row per service, the executors' with their broker's flow.

Pure formatting: the renderable is built from a `MeshStatus` and nothing else, so `--watch`
(rich.live) and a one-shot print show the same thing.
"""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from services.status.view import SERVING, BrokerStatus, MeshStatus

_BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}/s" if value >= 100 else f"{value:.1f}/s"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _flow(total: int, per_s: float | None, wide: bool) -> str:
    """A counter: its rate, and with room, its total before it."""
    return f"{total}, {_rate(per_s)}" if wide else _rate(per_s)


def _success(rate: float | None, total: float | None) -> str:
    """The window's success rate, else (in parentheses) the rate since start."""
    if rate is not None:
        return _percent(rate)
    return f"({_percent(total)})" if total is not None else "-"


def _recent(total: int, recent: int | None) -> str:
    return f"{total}" if not recent else f"{total} (+{recent})"


def render(view: MeshStatus, wide: bool = True) -> Group:
    """The table, and a summary line under it. `wide` (a console of 120 columns or more) adds each
    service's target and the counters' totals; narrow, the table fits 80 columns."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=not wide)
    table.add_column("service", no_wrap=True)
    if wide:
        table.add_column("target", no_wrap=True, style="dim")
    table.add_column("health", no_wrap=True)
    table.add_column("breaker", no_wrap=True)
    table.add_column("queue", justify="right", no_wrap=True)
    table.add_column("routed", justify="right", no_wrap=True)
    table.add_column("executed" if wide else "exec", justify="right", no_wrap=True)
    table.add_column("success", justify="right", no_wrap=True)
    table.add_column("failovers", justify="right", no_wrap=True)
    brokers: dict[str, BrokerStatus] = {b.service: b for b in view.brokers}
    for service in view.services:
        health = Text(service.health, style="green" if service.health == SERVING else "bold red")
        if not service.metrics_ok:
            health.append(" no metrics" if wide else "*", style="yellow")
        cells: list[str | Text] = [service.name, *([service.target] if wide else []), health]
        broker = brokers.get(service.name)
        if broker is not None:
            cells += [
                Text(broker.breaker.replace("_", "-"), style=_BREAKER_STYLE.get(broker.breaker, "yellow")),
                "-" if broker.queue_depth is None else str(broker.queue_depth),
                _flow(broker.routed, broker.routed_per_s, wide),
                _flow(broker.executions, broker.executions_per_s, wide),
                _success(broker.success_rate, broker.success_rate_total),
                _recent(broker.failovers, broker.failovers_recent),
            ]
        table.add_row(*cells)
    t = view.totals
    latency = "-" if t.routing_latency_ms is None else f"{t.routing_latency_ms:.1f} ms"
    summary = Text(
        f"{view.taken_at}  window {view.window_s:.1f} s  routed {_flow(t.routed, t.routed_per_s, True)}  "
        f"executed {_flow(t.executions, t.executions_per_s, True)}  "
        f"success {_success(t.success_rate, t.success_rate_total)}  "
        f"failovers {_recent(t.failovers, t.failovers_recent)}  "
        f"denied {'-' if t.denials_recent is None else t.denials_recent}  routing {latency}  "
        f"watchers {'-' if t.watchers is None else t.watchers}",
        style="dim",
    )
    lines: list[Table | Text] = [table, Text(), summary]
    if not view.serving:
        lines.append(Text(f"not serving: {', '.join(view.not_serving) or 'no services'}", style="bold red"))
    return Group(*lines)
