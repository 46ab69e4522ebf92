"""Issue 9, acceptance 1, against `nija up` as real processes: a TradingView-format alert posted
with curl to the webhook gateway fills every subscriber of the demo strategy at the size of their
own rule (alice fixed $150, bob 0.5 x the alert's size, dave 1% of $20,000); a wrong passphrase
gets 401 and places nothing; the same alert posted three times trades once."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from nija.common.v1 import common_pb2

from tests.e2e.up import UpMesh, start_up
from tests.ledger_db import rows

pytestmark = pytest.mark.e2e

PASSPHRASE = "demo-passphrase"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    up = start_up(tmp_path_factory.mktemp("gateway"))
    yield up
    assert up.stop() == 0


def _http(mesh: UpMesh) -> str:
    return json.loads(mesh.manifest.read_text())["gateway"]["http"]


def curl(mesh: UpMesh, body: str, path: str = "/webhook/tv-demo") -> tuple[int, dict]:
    """POST the alert the way TradingView does (the message as a text/plain body), with curl."""
    done = subprocess.run(
        ["curl", "-sS", "-X", "POST", "-H", "Content-Type: text/plain; charset=utf-8", "--data-binary", body,
         "-w", "\n%{http_code}", f"http://{_http(mesh)}{path}"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    text, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(text)


def result(mesh: UpMesh, alert_id: str, timeout_s: float = 60) -> dict:
    """GET /alerts/<id> (with the strategy's passphrase) until it is no longer processing."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = subprocess.run(
            ["curl", "-sS", "-H", f"X-Nija-Passphrase: {PASSPHRASE}", f"http://{_http(mesh)}/alerts/{alert_id}"],
            capture_output=True, text=True, timeout=30, check=True,
        )
        answer = json.loads(done.stdout)
        if answer.get("status") != "processing" or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def alert(alert_id: str | None, passphrase: str = PASSPHRASE, usd: str = "400") -> str:
    body = {"passphrase": passphrase, "ticker": "BTCUSD", "action": "buy", "size_usd": usd, "signal_type": "exit"}
    if alert_id:
        body["id"] = alert_id
    return json.dumps(body)


def orders(mesh: UpMesh, prefix: str) -> dict[str, tuple[str, Decimal]]:
    """{user: (status, size_usd)} of the ledger's orders whose signal id starts with `prefix.`."""
    found = rows(str(mesh.dir / "aggregator.db"),
                 "SELECT user_id, status, signal FROM orders WHERE signal_id LIKE ?", (f"{prefix}.%",))
    return {user: (status, Decimal(common_pb2.TradeSignal.FromString(blob).size_usd)) for user, status, blob in found}


def test_an_alert_fills_every_subscriber_at_their_own_size(mesh: UpMesh) -> None:
    started = time.monotonic()
    code, answer = curl(mesh, alert("tv-e2e-1"))
    answered_s = time.monotonic() - started
    assert (code, answer["status"], answer["alert_id"]) == (202, "accepted", "tv-e2e-1")
    print(f"\nalert answered {code} in {answered_s * 1000:.0f} ms (curl included)")
    assert answered_s < 3  # TradingView gives up after a few seconds

    outcome = result(mesh, "tv-e2e-1")
    assert outcome["status"] == "done", outcome
    assert {u: v["status"] for u, v in outcome["users"].items()} == {"alice": "filled", "bob": "filled", "dave": "filled"}
    assert orders(mesh, "tv-e2e-1") == {
        "alice": ("filled", Decimal(150)), "bob": ("filled", Decimal(200)), "dave": ("filled", Decimal(200)),
    }


def test_a_wrong_passphrase_is_401_and_nothing_happens(mesh: UpMesh) -> None:
    code, answer = curl(mesh, alert("tv-e2e-bad", passphrase="guess"))
    assert (code, answer["error"]) == (401, "BAD_PASSPHRASE")
    time.sleep(0.5)  # what an accepted alert would have written by now, it did not
    assert orders(mesh, "tv-e2e-bad") == {}


@pytest.mark.parametrize("alert_id", ["tv-e2e-3x", None])
def test_the_same_alert_three_times_trades_once(mesh: UpMesh, alert_id: str | None) -> None:
    body = alert(alert_id, usd="300")
    answers = [curl(mesh, body) for _ in range(3)]
    assert [code for code, _ in answers] == [202, 200, 200]
    assert [a["status"] for _, a in answers] == ["accepted", "duplicate", "duplicate"]
    first_id = answers[0][1]["alert_id"]
    assert {a["alert_id"] for _, a in answers} == {first_id}
    assert result(mesh, first_id)["status"] == "done"
    placed = orders(mesh, first_id)
    assert {u: s for u, (s, _) in placed.items()} == {"alice": "filled", "bob": "filled", "dave": "filled"}
