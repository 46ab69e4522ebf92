"""`nija trace <signal_id>`: a signal's span tree from the local trace store, with durations.

The store is what the services write when `NIJA_TRACE_DIR` is set (`nija up --trace` sets it):
one JSON object per span per line, in `<dir>/<service>-<pid>.jsonl`. Reading is pure apart
from `load_spans`; a torn last line (a service killed mid-write) is skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

import grpc

SUBMIT = "/nija.router.v1.RouterService/SubmitSignal"
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# Shown after a span's name when present (the rest stay in --json).
_SHOWN = ("nija.signal_id", "nija.user_id", "nija.broker", "nija.pair", "nija.method", "nija.leg",
          "nija.operation", "nija.attempt", "nija.status")
_GRPC_CODES = {code.value[0]: code.name for code in grpc.StatusCode}


@dataclasses.dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    attributes: dict[str, Any]
    children: list["Span"] = dataclasses.field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def load_spans(directory: pathlib.Path) -> list[Span]:
    spans = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                spans.append(Span(**{f.name: record[f.name] for f in dataclasses.fields(Span) if f.name != "children"}))
            except (ValueError, KeyError, TypeError):
                continue
    return spans


def traces_for(spans: Iterable[Span], key: str) -> list[list[Span]]:
    """The traces a signal id (or a trace id) appears in: its submission's first, then any
    background work that names it (the positions feed), each oldest first."""
    spans = list(spans)
    if _TRACE_ID.match(key):
        ids = {key}
    else:
        ids = {s.trace_id for s in spans if s.attributes.get("nija.signal_id") == key}
    grouped: dict[str, list[Span]] = {}
    for s in spans:
        if s.trace_id in ids:
            grouped.setdefault(s.trace_id, []).append(s)

    def order(trace: list[Span]) -> tuple[bool, int]:
        return (not any(s.name == SUBMIT for s in trace), min(s.start_ns for s in trace))

    return sorted(grouped.values(), key=order)


def build_tree(trace: list[Span]) -> list[Span]:
    """The roots of one trace, each span's children attached in start order. A span whose
    parent is not in the store (not exported yet, or from a process without tracing) is a root."""
    by_id = {s.span_id: s for s in trace}
    for s in trace:
        s.children = []
    roots = []
    for s in sorted(trace, key=lambda s: (s.start_ns, s.end_ns)):
        parent = by_id.get(s.parent_id)
        (parent.children if parent is not None and parent is not s else roots).append(s)
    return roots


def render(trace: list[Span]) -> str:
    roots = build_tree(trace)
    start = min(s.start_ns for s in trace)
    end = max(s.end_ns for s in trace)
    services = sorted({s.service for s in trace if s.service})
    lines = [f"trace {trace[0].trace_id}  {(end - start) / 1e6:.1f} ms, {len(trace)} spans, "
             f"services: {', '.join(services)}",
             f"{'start ms':>9} {'duration':>10}  {'service':<18} span"]

    def walk(span: Span, depth: int) -> None:
        attrs = " ".join(f"{k.removeprefix('nija.')}={span.attributes[k]}" for k in _SHOWN if k in span.attributes)
        code = span.attributes.get("rpc.grpc.status_code", 0)
        if code:
            attrs += f" grpc={_GRPC_CODES.get(code, code)}"
        flag = " !" if span.status == "error" else ""
        lines.append(f"{(span.start_ns - start) / 1e6:9.1f} {span.duration_ms:8.1f}ms  {span.service[:18]:<18} "
                     f"{'  ' * depth}{span.name.lstrip('/')} ({span.kind}){flag}  {attrs}".rstrip())
        for child in span.children:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return "\n".join(lines)


def as_json(trace: list[Span]) -> list[dict[str, Any]]:
    return [{f.name: getattr(s, f.name) for f in dataclasses.fields(Span) if f.name != "children"}
            for s in sorted(trace, key=lambda s: s.start_ns)]


# ---- the command ---------------------------------------------------------------------------------


def add_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("trace", help="print a signal's span tree from the local trace store (nija up --trace)")
    p.add_argument("key", metavar="SIGNAL_ID", help="a signal id (or a 32-hex trace id)")
    p.add_argument("--data-dir", default="var", help="the mesh's data directory (its traces/ folder)")
    p.add_argument("--trace-dir", help="the trace store itself (default: $NIJA_TRACE_DIR, else DATA_DIR/traces)")
    p.add_argument("--all", action="store_true", help="also the background traces naming the signal (positions feed)")
    p.add_argument("--json", action="store_true", help="the spans as JSON instead of a tree")
    p.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for the spans to arrive")
    p.set_defaults(func=cmd_trace)


def cmd_trace(args: argparse.Namespace) -> int:
    directory = pathlib.Path(args.trace_dir or os.environ.get("NIJA_TRACE_DIR") or pathlib.Path(args.data_dir) / "traces")
    deadline = time.monotonic() + args.wait
    while not (traces := traces_for(load_spans(directory), args.key)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not traces:
        print(f"nija trace: no spans for {args.key} in {directory} (is the mesh running with --trace, "
              "or NIJA_TRACE_DIR set?)", file=sys.stderr)
        return 1
    shown = traces if args.all else traces[:1]
    if args.json:
        print(json.dumps([as_json(t) for t in shown], indent=2))
    else:
        print("\n\n".join(render(t) for t in shown))
        if len(traces) > len(shown):
            print(f"\n({len(traces) - len(shown)} background trace(s) also name it: --all shows them)")
    return 0
