"""`nija up` as the e2e tests run it: a real process tree in a temporary data directory."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from services.runtime.security import Security

BIN = pathlib.Path(sys.executable).parent


@dataclasses.dataclass
class UpMesh:
    dir: pathlib.Path
    process: subprocess.Popen[str]
    targets: dict[str, str]
    pids: dict[str, int]
    console: object

    @property
    def manifest(self) -> pathlib.Path:
        return self.dir / "mesh.json"

    def token(self, who: str = "admin") -> str:
        """The admin's token, or a demo user's (`nija up` writes both, 0600)."""
        path = self.dir / "admin.token" if who == "admin" else self.dir / "tokens" / f"{who}.token"
        return path.read_text().strip()

    def security(self, who: str = "admin", **tls: str) -> Security:
        return Security(token=self.token(who), **tls)

    def nija(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`nija ARGS... --data-dir DIR`: against this mesh (its manifest and admin token)."""
        return subprocess.run(
            [str(BIN / "nija"), *args, "--data-dir", str(self.dir)], capture_output=True, text=True,
            timeout=timeout, env={**os.environ, **(env or {})},
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.console.close()  # type: ignore[attr-defined]
        return self.process.returncode


def start_up(data: pathlib.Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 90) -> UpMesh:
    """`nija up --auto-ports --data-dir DATA ARGS...`, returned once every service is SERVING."""
    console = open(data / "console.txt", "w")  # noqa: SIM115 - closed by stop()
    process = subprocess.Popen(
        [str(BIN / "nija"), "up", "--auto-ports", "--data-dir", str(data), *args],
        stdout=console, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
    )
    manifest = data / "mesh.json"
    deadline = time.monotonic() + timeout_s
    while not manifest.exists():
        if process.poll() is not None:
            console.close()
            pytest.fail(f"nija up exited early:\n{(data / 'console.txt').read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            console.close()
            pytest.fail(f"nija up did not become ready in {timeout_s:g} s")
        time.sleep(0.1)
    entries = json.loads(manifest.read_text())
    return UpMesh(
        dir=data, process=process, console=console,
        targets={k: v["target"] for k, v in entries.items()}, pids={k: v["pid"] for k, v in entries.items()},
    )
