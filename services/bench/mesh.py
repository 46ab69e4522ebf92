"""The mesh under test: `nija up --auto-ports` as real processes, and what each of them costs.

Each service is a child of the `nija up` process (`python -m services.cli serve <kind> ...`); it is
named from that argv (`executor` with its `--set broker=...`). CPU seconds are utime + stime from
/proc/<pid>/stat, sampled at phase boundaries so each phase gets its own deltas; peak RSS is the
kernel's own high-water mark (VmHWM in /proc/<pid>/status), so no spike between samples is missed.
Linux only, as the benchmark's targets are.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from services.runtime.security import Security

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class MeshError(RuntimeError):
    """The mesh did not come up (its console output says why)."""


# ---- pure parsing of /proc ---------------------------------------------------------------------


def service_name(argv: Sequence[str]) -> str | None:
    """'router', 'executor-kraken', ... from a child's argv; None for a process that is no service."""
    if "serve" not in argv:
        return None
    index = list(argv).index("serve")
    if index + 1 >= len(argv):
        return None
    kind = argv[index + 1]
    if kind != "executor":
        return kind
    broker = next((a.split("=", 1)[1] for a in argv if a.startswith("broker=")), "binance")
    return f"executor-{broker}"


def stat_fields(text: str) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses): field 3
    (state) is index 0, so ppid is [1], utime [11], stime [12]."""
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(stat_text: str, ticks: int = CLOCK_TICKS) -> float:
    fields = stat_fields(stat_text)
    return (int(fields[11]) + int(fields[12])) / ticks


def status_kb(status_text: str, key: str) -> int | None:
    """A `Key:   1234 kB` line of /proc/<pid>/status, in kB."""
    for line in status_text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return None


# ---- /proc readers -----------------------------------------------------------------------------


def children_of(parent: int, proc: pathlib.Path = pathlib.Path("/proc")) -> dict[str, int]:
    """{service name: pid} of `parent`'s children that are mesh services."""
    found = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(stat_fields((entry / "stat").read_text())[1]) != parent:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):  # gone in between
            continue
        name = service_name(argv)
        if name:
            found[name] = int(entry.name)
    return found


@dataclasses.dataclass(frozen=True)
class Usage:
    cpu_s: float
    peak_rss_kb: int
    rss_kb: int


def usage(pid: int) -> Usage | None:
    """What process `pid` has used so far; None when it is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return Usage(cpu_seconds(stat), status_kb(status, "VmHWM") or 0, status_kb(status, "VmRSS") or 0)


def sample(pids: Mapping[str, int]) -> dict[str, Usage]:
    return {name: u for name, pid in pids.items() if (u := usage(pid)) is not None}


def cpu_deltas(before: Mapping[str, Usage], after: Mapping[str, Usage]) -> dict[str, float]:
    """CPU seconds each service spent between two samples."""
    return {name: round(after[name].cpu_s - before[name].cpu_s, 3) for name in after if name in before}


# ---- the process tree --------------------------------------------------------------------------


@dataclasses.dataclass
class RunningMesh:
    process: subprocess.Popen[bytes]
    data_dir: pathlib.Path
    targets: dict[str, str]
    metrics: dict[str, str]
    pids: dict[str, int]

    def security(self, who: str = "admin") -> Security:
        """The admin's token or a demo user's (`nija up` writes both, 0600)."""
        path = self.data_dir / "admin.token" if who == "admin" else self.data_dir / "tokens" / f"{who}.token"
        return Security(token=path.read_text().strip())

    @property
    def admin(self) -> Security:
        """The load generator acts for every bench user as the admin."""
        return self.security("admin")

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def up_command(data_dir: pathlib.Path, settings: Mapping[str, Mapping[str, str]]) -> list[str]:
    """`nija up --auto-ports --data-dir DIR --set service:key=value ...` through this interpreter's
    venv (the `nija` script beside it), so the mesh runs the code under test."""
    nija = pathlib.Path(sys.executable).parent / "nija"
    cmd = [str(nija), "up", "--auto-ports", "--data-dir", str(data_dir)]
    for service, values in settings.items():
        for key, value in values.items():
            cmd += ["--set", f"{service}:{key}={value}"]
    return cmd


def start_mesh(data_dir: pathlib.Path, settings: Mapping[str, Mapping[str, str]], timeout_s: float = 120.0) -> RunningMesh:
    """Start the mesh and return once `nija up` has written its manifest (every service SERVING)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    console = open(data_dir / "console.txt", "wb")  # noqa: SIM115 - the child holds it
    process = subprocess.Popen(up_command(data_dir, settings), stdout=console, stderr=subprocess.STDOUT,
                               start_new_session=True)
    console.close()
    manifest = data_dir / "mesh.json"
    deadline = time.monotonic() + timeout_s
    while not manifest.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait()
            tail = (data_dir / "console.txt").read_text(errors="replace")[-2000:]
            raise MeshError(f"nija up did not come up (exit {process.returncode}):\n{tail}")
        time.sleep(0.1)
    entries = json.loads(manifest.read_text())
    pids = children_of(process.pid)
    missing = set(entries) - set(pids)
    if missing:  # the manifest knows them: a child we could not read is named from there
        pids.update({name: int(entries[name]["pid"]) for name in missing if entries[name].get("pid")})
    return RunningMesh(
        process=process, data_dir=data_dir,
        targets={n: e["target"] for n, e in entries.items()},
        metrics={n: e["metrics"] for n, e in entries.items()},
        pids=pids,
    )
