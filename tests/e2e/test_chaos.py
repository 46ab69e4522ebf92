"""`nija chaos`, short and with a fixed seed, on SQLite and on PostgreSQL: the mesh as real
processes under load while every service kind is killed with SIGKILL and restarted, and every
kind of exchange fault strikes (on PostgreSQL, the database also drops every connection, as a
restart does); then the three records must agree: nothing lost, nothing duplicated, no mismatch,
nobody left waiting.

The long run is the same command without the short figures (10 minutes, at least 30 kills):
`nija chaos --seed N`."""

from __future__ import annotations

import contextlib
import json
import pathlib
import subprocess
from collections.abc import Iterator

import pytest

from services.chaos.run import kill_targets
from tests import pg
from tests.e2e.up import BIN

pytestmark = pytest.mark.e2e

MUST_BE_ZERO = ("lost", "duplicated", "ledger_exchange_mismatches", "told_ledger_mismatches",
                "position_mismatches", "unresolved")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """The run's database arguments: none (SQLite files), or a PostgreSQL database of its own."""
    with contextlib.ExitStack() as stack:
        yield [] if request.param == "sqlite" else ["--database-url", stack.enter_context(pg.fresh_database())]


def test_a_short_fixed_seed_chaos_run_loses_and_duplicates_nothing(tmp_path: pathlib.Path, database: list[str]) -> None:
    data = tmp_path / "chaos"
    done = subprocess.run(
        [str(BIN / "nija"), "chaos", "--seed", "20261207", "--duration", "60", "--users", "40", "--rate", "8",
         "--kill-every", "5", "--quiet", "15", "--settle", "120", "--data-dir", str(data), *database],
        capture_output=True, text=True, timeout=360,
    )
    result = json.loads((data / "chaos.json").read_text())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    figures = result["figures"]
    assert {name: figures[name] for name in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0), result
    assert figures["accepted"] == result["signals"] == 480
    assert figures["filled"] + figures["rejected"] == figures["accepted"]
    assert figures["filled"] >= 0.9 * figures["accepted"]  # faults delay orders; they do not lose them
    # Every service kind was killed at least once, and the exchanges misbehaved in several ways.
    assert set(result["kills"]) == set(kill_targets(2)), result["kills"]
    assert len(result["exchange_faults"]) >= 3, result["exchange_faults"]
    if database:
        assert result["db_disconnects"] >= 1
    assert result["attempts"] > result["signals"]  # some calls failed and were sent again
