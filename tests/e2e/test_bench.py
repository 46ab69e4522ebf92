"""`nija bench --quick` end to end: the real mesh started by the benchmark itself, the burst,
sustained and routing modes, and the files it writes."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from services.cli import SERVICE_MODULES
from tests.e2e.up import BIN

pytestmark = pytest.mark.e2e


def test_quick_bench_runs_every_asked_mode_and_writes_its_report(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "bench"
    done = subprocess.run(
        [str(BIN / "nija"), "bench", "--quick", "--modes", "burst,sustained,routing", "--no-progress",
         "--out", str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout or "FAIL" in done.stdout  # the targets table was printed

    result = json.loads((out / "result.json").read_text())
    burst, sustained, routing = result["burst"], result["sustained"], result["routing"]
    assert burst["size"] == burst["sent"] == 200
    assert burst["filled"] == burst["sent"] and burst["outcomes"] == {"filled": 200}
    assert burst["elapsed_s"] > 0 and burst["throughput_per_s"] > 0
    assert sustained["sent"] == sustained["signals"] == 300
    assert sustained["filled"] == sustained["sent"] and sustained["outcomes"] == {"filled": 300}
    for p in (burst["terminal"], sustained["first"], sustained["terminal"], routing["latency"]):
        assert 0 < p["p50"] <= p["p90"] <= p["p99"] <= p["max"]
    assert routing["latency"]["n"] == routing["quotes"] and routing["concurrency"] == 100
    assert sustained["routing_in_mesh"]["decisions"] >= 300
    assert result["baseline"]["unary_per_s"] > 0 and sustained["echo_ratio"] > 0
    assert "stream" not in result and "noisy" not in result and "scale" not in result

    kinds = {name.split("-")[0] for name in result["services"]["cpu_s"]}
    assert kinds == set(SERVICE_MODULES)
    assert set(result["services"]["cpu_s"]) == set(result["services"]["peak_rss_mb"])
    assert len(result["services"]["cpu_s"]) == len(SERVICE_MODULES) - 1 + 4  # four executors
    assert sum(result["services"]["cpu_s"].values()) > 0
    assert all(10 < mb < 1000 for mb in result["services"]["peak_rss_mb"].values())
    assert result["machine"]["nproc"] >= 1 and result["load_generator"]["cpu_s"] > 0

    names = {t["name"]: t for t in result["targets"]}
    assert names["completion time"]["verdict"] in {"PASS", "FAIL"}
    markdown = (out / "report.md").read_text()
    assert "| burst | completion time |" in markdown
    for png in ("latency.png", "throughput.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
