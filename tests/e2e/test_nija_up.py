"""The mesh as real processes, started the way the README does (`nija up`), traded through the
CLI, a plain stub and grpcurl, then stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import signal
import sqlite3
import subprocess
import sys
import time

import grpc
import pytest
from nija.common.v1 import common_pb2
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.domain.brokers import DEFAULT_PORTS
from services.runtime.wire import status_name

pytestmark = pytest.mark.e2e

BIN = pathlib.Path(sys.executable).parent
SERVICES = ["simexchange", "aggregator", "permission", "executor-coinbase", "executor-kraken",
            "executor-binance", "executor-alpaca", "router", "gateway"]
HEALTH_NAMES = {
    "simexchange": "nija.simexchange.v1.SimulatedExchangeService",
    "aggregator": "nija.aggregator.v1.AggregatorService",
    "permission": "nija.permission.v1.PermissionService",
    "router": "nija.router.v1.RouterService",
    "gateway": "nija.gateway.v1.WebhookGateway",
}


def health_name(service: str) -> str:
    return "nija.executor.v1.ExecutorService" if service.startswith("executor-") else HEALTH_NAMES[service]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    data = tmp_path_factory.mktemp("mesh")
    console = open(data / "console.txt", "w")  # noqa: SIM115 - closed at teardown
    up = subprocess.Popen(
        [str(BIN / "nija"), "up", "--auto-ports", "--data-dir", str(data)],
        stdout=console, stderr=subprocess.STDOUT, text=True,
    )
    manifest = data / "mesh.json"
    deadline = time.monotonic() + 90
    while not manifest.exists():
        if up.poll() is not None:
            pytest.fail(f"nija up exited early:\n{(data / 'console.txt').read_text()}")
        if time.monotonic() > deadline:
            up.kill()
            pytest.fail("nija up did not become ready in 90 s")
        time.sleep(0.1)
    entries = json.loads(manifest.read_text())
    yield {"dir": data, "up": up, "targets": {k: v["target"] for k, v in entries.items()},
           "pids": {k: v["pid"] for k, v in entries.items()}, "manifest": manifest}
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
    console.close()


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = BIN / "grpcurl"
    if not exe.exists():
        pytest.skip("grpcurl not installed")
    return run(str(exe), "-plaintext", *args)


def test_every_service_is_its_own_process_and_serving(mesh):
    assert sorted(mesh["targets"]) == sorted(SERVICES)
    assert len(set(mesh["pids"].values())) == len(SERVICES)
    for name, pid in mesh["pids"].items():
        os.kill(pid, 0)  # alive
    for name, target in mesh["targets"].items():
        for service in ("", health_name(name)):
            out = grpcurl("-d", json.dumps({"service": service}), target, "grpc.health.v1.Health/Check")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["status"] == "SERVING"
    status = run(str(BIN / "nija"), "status", "--mesh", str(mesh["manifest"]))
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("SERVING") == len(SERVICES)


def test_reflection_lists_each_services_api(mesh):
    for name, target in mesh["targets"].items():
        out = grpcurl(target, "list")
        assert out.returncode == 0, out.stderr
        listed = out.stdout.split()
        assert health_name(name) in listed and "grpc.health.v1.Health" in listed
    described = grpcurl(mesh["targets"]["router"], "describe", "nija.router.v1.RouterService")
    assert "returns ( stream .nija.router.v1.SubmitSignalResponse )" in described.stdout
    message = grpcurl(mesh["targets"]["router"], "describe", "nija.common.v1.TradeSignal")
    assert "string size_usd = 5;" in message.stdout


def test_nija_trade_streams_to_filled(mesh):
    out = run(str(BIN / "nija"), "trade", "--mesh", str(mesh["manifest"]), "--user", "alice",
              "--pair", "BTC-USD", "--side", "buy", "--usd", "250")
    assert out.returncode == 0, out.stdout + out.stderr
    statuses = [line.split()[1] for line in out.stdout.splitlines() if line.strip().startswith("#")]
    assert statuses[:2] == ["pending", "routing"]
    assert "queued" in statuses and "executing" in statuses
    assert statuses[-1] == "filled"
    assert "fill " in out.stdout and "fee " in out.stdout


def test_grpcurl_submits_a_signal(mesh):
    body = {"signal": {"signal_id": "grpcurl-1", "user_id": "bob", "pair": "ETH-USD", "side": "SIDE_BUY",
                       "size_usd": "300", "signal_type": "SIGNAL_TYPE_EXIT", "strategy": "grpcurl"}}
    out = grpcurl("-H", f"authorization: Bearer {token(mesh, 'bob')}", "-d", json.dumps(body),
                  mesh["targets"]["router"], "nija.router.v1.RouterService/SubmitSignal")
    assert out.returncode == 0, out.stderr
    updates = [json.loads(chunk) for chunk in out.stdout.replace("}\n{", "}\x00{").split("\x00")]
    statuses = [u["update"]["status"] for u in updates]
    assert statuses[0] == "EXECUTION_STATUS_PENDING" and statuses[-1] == "EXECUTION_STATUS_FILLED"
    assert updates[-1]["update"]["broker"] in ("coinbase", "kraken")  # bob's brokers


def test_plain_stub_sees_only_persisted_updates_and_one_order_per_signal_id(mesh):
    db = mesh["dir"] / "aggregator.db"

    def stored(user: str, sequence: int) -> bytes | None:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT body FROM updates WHERE user_id=? AND sequence=?", (user, sequence)).fetchone()
        return row[0] if row else None

    pb = common_pb2.TradeSignal(signal_id="e2e-dup-1", user_id="alice", pair="ETH-USD", side=common_pb2.SIDE_BUY,
                                size_usd="500", signal_type=common_pb2.SIGNAL_TYPE_ENTRY, strategy="e2e")
    runs = []
    as_alice = (("authorization", f"Bearer {token(mesh, 'alice')}"),)
    with grpc.insecure_channel(mesh["targets"]["router"]) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        for _ in range(2):
            seen = []
            for response in stub.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=60, metadata=as_alice):
                body = stored("alice", response.update.sequence)
                assert body is not None, "update reached the caller before it was persisted"
                assert common_pb2.ExecutionUpdate.FromString(body) == response.update
                seen.append(response.update)
            runs.append(seen)
    assert [status_name(u.status) for u in runs[0]][-1] == "filled"
    assert [u.sequence for u in runs[1]] == [u.sequence for u in runs[0]]  # the first submission's stream
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        orders = conn.execute("SELECT count(*) FROM orders WHERE signal_id='e2e-dup-1'").fetchone()[0]
        executing = conn.execute(
            "SELECT count(*) FROM updates WHERE signal_id='e2e-dup-1' AND status='executing'").fetchone()[0]
    assert (orders, executing) == (1, 1)


@pytest.mark.parametrize(
    "user,pair,usd,code,reason",
    [
        ("alice", "BTC-USD", "NaN", "INVALID_ARGUMENT", "BAD_SIZE_USD"),
        ("alice", "BTC-USD", "-1", "INVALID_ARGUMENT", "BAD_SIZE_USD"),
        ("alice", "NOPE-USD", "100", "NOT_FOUND", "UNKNOWN_PAIR"),
        ("nobody", "BTC-USD", "100", "NOT_FOUND", "USER_NOT_FOUND"),
        ("carol", "BTC-USD", "100", "FAILED_PRECONDITION", "USER_DISABLED"),
    ],
)
def test_bad_input_is_refused_with_a_reason(mesh, user, pair, usd, code, reason):
    sid = f"bad-{user}-{pair}-{usd}".replace(".", "_")
    pb = common_pb2.TradeSignal(signal_id=sid, user_id=user, pair=pair, side=common_pb2.SIDE_BUY, size_usd=usd,
                                signal_type=common_pb2.SIGNAL_TYPE_ENTRY)
    with grpc.insecure_channel(mesh["targets"]["router"]) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=10,
                                   metadata=(("authorization", f"Bearer {token(mesh, 'admin')}"),)))
    assert info.value.code().name == code
    assert info.value.details()
    md = dict(info.value.trailing_metadata())
    assert reason.encode() in md["grpc-status-details-bin"]
    with sqlite3.connect(f"file:{mesh['dir'] / 'aggregator.db'}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT count(*) FROM updates WHERE signal_id=?", (sid,)).fetchone()[0] == 0


def token(mesh, who: str) -> str:
    """The admin's or a demo user's token, as `nija up` wrote it."""
    path = mesh["dir"] / "admin.token" if who == "admin" else mesh["dir"] / "tokens" / f"{who}.token"
    return path.read_text().strip()


def test_calls_without_a_token_are_unauthenticated(mesh):
    body = {"signal": {"signal_id": "no-token", "user_id": "alice", "pair": "ETH-USD", "side": "SIDE_BUY",
                       "size_usd": "100", "signal_type": "SIGNAL_TYPE_ENTRY"}}
    out = grpcurl("-d", json.dumps(body), mesh["targets"]["router"], "nija.router.v1.RouterService/SubmitSignal")
    assert out.returncode != 0 and "Unauthenticated" in out.stderr


def readme_grpcurl_commands() -> list[str]:
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    return [line for line in readme.read_text().splitlines() if line.startswith("grpcurl ")]


def test_readme_grpcurl_examples_work(mesh):
    commands = readme_grpcurl_commands()
    assert len(commands) >= 6
    by_default_port = {f"127.0.0.1:{port}": mesh["targets"][name] for name, port in DEFAULT_PORTS.items()}
    tokens = {"$(cat var/admin.token)": token(mesh, "admin"), "$(cat var/tokens/alice.token)": token(mesh, "alice")}
    for command in commands:
        for text, value in tokens.items():  # what the shell would substitute
            command = command.replace(text, value)
        argv = shlex.split(command)[1:]
        argv = [by_default_port.get(arg, arg) for arg in argv]
        out = grpcurl(*(a for a in argv if a != "-plaintext"))
        assert out.returncode == 0, f"{command}\n{out.stderr}"
        assert out.stdout.strip(), command


def test_sigterm_stops_every_process_cleanly_and_no_traceback_was_logged(mesh):
    up = mesh["up"]
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=60) == 0
    for pid in mesh["pids"].values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for log in (mesh["dir"] / "logs").glob("*.log"):
        text = log.read_text()
        assert "Traceback" not in text, f"{log.name} logged a traceback:\n{text[-3000:]}"
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines, f"{log.name} has no JSON log lines"
        assert any(entry["msg"] == "stopped" for entry in lines), f"{log.name} did not drain and stop"
