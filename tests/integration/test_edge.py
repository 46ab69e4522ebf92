"""The edge (deploy/k8s/base/edge/, issue 11 acceptance 5): the deployed nginx configuration, run
by a real nginx in front of real servers, with only the upstream and listen addresses replaced.

It serves exactly the methods people may call (the services' own access rules say which), paces
and refuses one token's excess with RESOURCE_EXHAUSTED RATE_LIMITED while others are served, and
keeps a bystander's p99 near normal while an abuser floods the server behind it: the resource abuse
of test_resource_abuse.py, this time through the door clients use. Latency is printed
(`pytest -s`), never asserted (a shared 2-core machine); test_resource_abuse.py prints the same
abuse straight at the server, in the same run, for the comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import shutil
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.router.v1 import router_pb2, router_pb2_grpc

from services import cli
from services.aggregator import app as aggregator_app
from services.domain.signal import MAX_METADATA_VALUE, PARENT_KEY
from services.runtime.auth import PrincipalKind
from services.runtime.certs import make_dev_certs
from services.runtime.errors import reason_of
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from services.runtime.wire import status_name
from tests.harness import signal, start_mesh
from tests.integration import test_resource_abuse
from tests.integration.abuser import WAIT_S, bearer, connection, ledger_stub, watch
from tests.integration.test_resource_abuse import (
    ALICE, FAT, LIMIT, MEMORY_LIMIT_MIB, Bystander, abused, create_order, rss_mib, until,
)
from tests.principals import authenticate

#: The aggregator alone (SQLite), with its default limits; alice and bob have an order each.
ledger = test_resource_abuse.ledger
ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "deploy" / "k8s" / "base" / "edge"
MTLS_TRANSPORT = ROOT / "deploy" / "k8s" / "overlays" / "mtls" / "edge" / "transport.conf"
#: The upstream addresses in the deployed file (deploy/k8s Service names and ports).
UPSTREAMS = {"router": "router:50051", "aggregator": "aggregator:50053", "permission": "permission:50052"}
LISTEN = "listen 50050 "
#: Where the pod mounts its certificate Secret (tls.crt, tls.key, ca.crt) under mtls.
TLS_DIR = "/etc/nija/tls/"
PEOPLE = {PrincipalKind.USER, PrincipalKind.STRATEGY}
#: Every method of every mesh service and who may call it, by service kind.
ACCESS = {kind: getattr(importlib.import_module(module), "ACCESS", {}) for kind, module in cli.SERVICE_MODULES.items()}


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the edge's configuration should say {old!r} once"
    return text.replace(old, new)


def edge_files(upstreams: dict[str, str], port: int, transport: Path, tls_dir: Path | None) -> dict[str, str]:
    """The deployed nginx.conf and `transport` with the test's addresses (and certificates)."""
    conf = (EDGE / "nginx.conf").read_text()
    for name, address in UPSTREAMS.items():
        conf = _replace_once(conf, f"server {address};", f"server {upstreams[name]};")
    listen = _replace_once(transport.read_text(), LISTEN, f"listen 127.0.0.1:{port} ")
    if tls_dir is not None:
        listen = listen.replace(TLS_DIR, f"{tls_dir}/")
    return {"nginx.conf": conf, "transport.conf": listen}


def bearer_of(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class Edge:
    target: str
    pid: int

    def rss_mib(self) -> float:
        """nginx's memory: its master's RSS and its workers'."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return sum(rss_mib(pid) for pid in (self.pid, *map(int, children)))


@contextlib.asynccontextmanager
async def edge(
    tmp: Path, upstreams: dict[str, str], transport: Path = EDGE / "transport.conf", tls_dir: Path | None = None
) -> AsyncIterator[Edge]:
    """nginx running the deployed configuration in front of `upstreams` (`transport`: the base's
    plaintext, or the mtls overlay's with the certificates in `tls_dir`). nginx cannot say which
    port it got for port 0, so it is given a free one (tried again if taken meanwhile)."""
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        pytest.fail("nginx is not installed (make test installs it: tools/install_nginx.sh)")
    prefix = tmp / "edge"
    prefix.mkdir()
    for _ in range(3):
        port = _free_port()
        for name, text in edge_files(upstreams, port, transport, tls_dir).items():
            (prefix / name).write_text(text)
        log = open(prefix / "error.log", "ab")  # noqa: SIM115 (closed below, whatever happens)
        process = await asyncio.create_subprocess_exec(
            nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;", stderr=log
        )
        if await _listening(port, process):
            break
        log.close()
    else:
        pytest.fail(f"nginx did not start: {(prefix / 'error.log').read_text()}")
    try:
        yield Edge(f"127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        await process.wait()
        log.close()


async def _listening(port: int, process: asyncio.subprocess.Process) -> bool:
    for _ in range(250):
        if process.returncode is not None:
            return False
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return True
        await asyncio.sleep(0.02)
    process.kill()
    await process.wait()
    return False


async def call_raw(channel: grpc.aio.Channel, method: str, token: str) -> grpc.aio.AioRpcError | None:
    """`method` with an empty request, as `token`'s holder: how it was refused (None if answered)."""
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        await call(b"", metadata=bearer_of(token), timeout=WAIT_S)
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


async def test_people_reach_their_own_methods_through_the_edge_and_nothing_else_is_served(tmp_path: Path) -> None:
    mesh = await start_mesh(tmp_path)
    upstreams = {name: mesh.servers[name].target for name in UPSTREAMS}
    try:
        async with edge(tmp_path, upstreams) as front, connection(front.target) as channel:
            alice = mesh.tokens.users["alice"]
            # A whole trade through the edge, and the ledger's answer about it.
            router = router_pb2_grpc.RouterServiceStub(channel)
            request = router_pb2.SubmitSignalRequest(signal=signal("alice", usd="100", signal_id="edge-1"))
            updates = [r.update async for r in router.SubmitSignal(request, metadata=bearer_of(alice), timeout=WAIT_S)]
            assert status_name(updates[-1].status) == "filled"
            order = await ledger_stub(channel).GetOrder(
                a.GetOrderRequest(user_id="alice", signal_id="edge-1"), metadata=bearer_of(alice), timeout=WAIT_S)
            assert status_name(order.order.status) == "filled"
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=WAIT_S)
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            # Every method of the mesh: served if people may call it, else NOT_PUBLIC at the edge.
            served, refused = [], []
            for service, rules in ACCESS.items():
                for method, rule in rules.items():
                    public = service in UPSTREAMS and bool(rule.kinds & PEOPLE)
                    exc = await call_raw(channel, method, alice)
                    at_edge = exc is not None and reason_of(exc) == "NOT_PUBLIC"
                    if at_edge:
                        assert exc is not None and exc.code() == grpc.StatusCode.UNIMPLEMENTED
                    (served if public else refused).append((method, at_edge))
            assert [m for m, at_edge in served if at_edge] == []
            assert [m for m, at_edge in refused if not at_edge] == []
            assert len(served) == 17 and len(served) + len(refused) == sum(map(len, ACCESS.values()))
    finally:
        await mesh.stop()


async def test_under_mtls_the_edge_speaks_tls_to_clients_and_presents_its_certificate_to_the_services(
    tmp_path: Path
) -> None:
    """The mtls overlay's transport: clients reach the edge over TLS (verified against the mesh CA),
    and the edge reaches an aggregator that asks every caller for a mesh client certificate."""
    certs = make_dev_certs(tmp_path / "certs", ["aggregator", "edge"])
    ca = tmp_path / "certs" / "ca.pem"
    mounted = tmp_path / "tls"  # the pod's Secret mount: tls.crt, tls.key, ca.crt
    mounted.mkdir()
    for source, name in ((certs["edge"][0], "tls.crt"), (certs["edge"][1], "tls.key"), (ca, "ca.crt")):
        shutil.copy(source, mounted / name)
    cert, key = certs["aggregator"]
    security = Security(tls_cert_file=str(cert), tls_key_file=str(key), tls_ca_file=str(ca))
    assert security.mtls
    app = aggregator_app.build_app(aggregator_app.Config(database_path=str(tmp_path / "ledger.db")), security, authenticate)
    server = await RunningServer(app, Listen(port=0), security).start()
    try:
        upstreams = dict.fromkeys(UPSTREAMS, server.target)
        async with edge(tmp_path, upstreams, MTLS_TRANSPORT, mounted) as front:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
            async with grpc.aio.secure_channel(front.target, credentials) as channel:
                stub = ledger_stub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as missing:  # reached the ledger: it answers
                    await stub.GetOrder(a.GetOrderRequest(user_id="bob", signal_id="none"), metadata=bearer("bob"), timeout=WAIT_S)
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            async with grpc.aio.insecure_channel(front.target) as plaintext:  # no TLS, no answer
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await ledger_stub(plaintext).GetOrder(a.GetOrderRequest(user_id="bob", signal_id="x"), metadata=bearer("bob"), timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_one_tokens_excess_is_paced_then_refused_while_another_is_served(
    ledger: RunningServer, tmp_path: Path
) -> None:
    async with edge(tmp_path, dict.fromkeys(UPSTREAMS, ledger.target)) as front, \
            connection(front.target) as alices, connection(front.target) as bobs:
        def get(channel: grpc.aio.Channel, user: str, token: tuple[tuple[str, str]]) -> grpc.aio.UnaryUnaryCall:
            request = a.GetOrderRequest(user_id=user, signal_id=f"{user[0]}-0")
            return ledger_stub(channel).GetOrder(request, metadata=token, timeout=WAIT_S)

        async def answers(calls: list[grpc.aio.UnaryUnaryCall]) -> Counter[str]:
            results = await asyncio.gather(*calls, return_exceptions=True)
            return Counter("OK" if isinstance(r, a.GetOrderResponse) else f"{r.code().name} {reason_of(r)}"
                           for r in results)

        alice, bob = await asyncio.gather(
            answers([get(alices, "alice", bearer("alice")) for _ in range(800)]),
            answers([get(bobs, "bob", bearer("bob")) for _ in range(100)]),
        )
        # 200 may wait their turn: those are served; the rest of the burst is refused.
        assert set(alice) == {"OK", "RESOURCE_EXHAUSTED RATE_LIMITED"}, alice
        assert alice["OK"] >= 200, alice
        assert bob == {"OK": 100}
        # Without a token, the client's address is what is paced; the servers refuse the call.
        anonymous = await answers([ledger_stub(alices).GetOrder(a.GetOrderRequest(), timeout=WAIT_S) for _ in range(400)])
        assert set(anonymous) == {"UNAUTHENTICATED MISSING_TOKEN", "RESOURCE_EXHAUSTED RATE_LIMITED"}, anonymous


#: test_resource_abuse.py's abuses, as many of each.
ABUSES = {"streams": 2000, "connections": 300, "oversized": 10}
REFUSED_STREAM = {"RESOURCE_EXHAUSTED TOO_MANY_STREAMS", "RESOURCE_EXHAUSTED RATE_LIMITED"}


@pytest.mark.parametrize("scenario", ABUSES)
async def test_resource_abuse_through_the_edge_is_paced_before_the_server_and_others_are_served(
    ledger: RunningServer, tmp_path: Path, scenario: str
) -> None:
    count = ABUSES[scenario]
    async with connection(ledger.target) as direct:
        if scenario == "oversized":  # her pages of large orders, as in test_resource_abuse.py
            for n in range(150):
                await create_order(ledger_stub(direct), "alice", f"big-{n}", FAT)
    async with edge(tmp_path, dict.fromkeys(UPSTREAMS, ledger.target)) as front, connection(front.target) as channel:
        bob = Bystander(ledger_stub(channel))
        await bob.calls(bob.normal)
        before, edge_before = rss_mib(), front.rss_mib()
        async with abused(bob, front.target, scenario, count) as answered:
            held, edge_held = rss_mib(), front.rss_mib()
            print(f"\n[rss] through the edge, {scenario} {count}: server {before:.0f} -> {held:.0f} MiB, "
                  f"nginx {edge_before:.0f} -> {edge_held:.0f} MiB")
            await bob.report(f"through the edge: {scenario} {count} from alice")
            if scenario == "oversized":
                assert answered == {"answers": {"RESOURCE_EXHAUSTED": 20, "OK": 10}}
            else:
                # The server's own limit still holds what got past the edge; some never got there.
                assert answered["admitted"] == LIMIT
                assert set(answered["refused"]) <= REFUSED_STREAM
                assert sum(answered["refused"].values()) == count - LIMIT
                assert ledger.principal_limiter.open_streams(*ALICE) == LIMIT
            if scenario == "connections":
                assert set(answered["unary"]) <= {"OK", "RESOURCE_EXHAUSTED RATE_LIMITED"}
                assert sum(answered["unary"].values()) == count
            assert held - before < 96 and held < MEMORY_LIMIT_MIB
            assert edge_held < MEMORY_LIMIT_MIB


async def test_a_watcher_that_never_reads_through_the_edge_costs_others_nothing_beyond_the_writes(
    ledger: RunningServer, tmp_path: Path
) -> None:
    """The writes (the router's, straight to the server) are what any watcher of alice's costs; the
    abuse is only that one of them never reads. Bob's p99 is measured through the same writes with
    and without it, so the ratio is the abuse's own."""
    hub = ledger.app.hub
    writer = connection(ledger.target)
    orders = iter(range(3000))

    async def write(count: int) -> None:
        async def one_writer() -> None:
            for n in orders:
                await create_order(ledger_stub(writer), "alice", f"a-{n + 1}", {PARENT_KEY: "p" * MAX_METADATA_VALUE})
                if n >= count:
                    return
        await asyncio.gather(*(one_writer() for _ in range(8)))

    async with edge(tmp_path, dict.fromkeys(UPSTREAMS, ledger.target)) as front, connection(front.target) as channel:
        bob = Bystander(ledger_stub(channel))
        async with bob.during_abuse():  # bob's "normal": the same writes, nobody silent
            await write(1500)
        bob.normal, bob.during = bob.during, []
        silent = connection(front.target, http2__bdp_probe=0)
        never_read = watch(silent, "alice")
        await until(lambda: hub.watchers("alice") == 1)
        before, edge_before = rss_mib(), front.rss_mib()
        async with bob.during_abuse():
            await write(3000)
        after, edge_after = rss_mib(), front.rss_mib()
        print(f"\n[rss] through the edge, 1,500 updates for a watcher that never reads: server {before:.0f} -> "
              f"{after:.0f} MiB, nginx {edge_before:.0f} -> {edge_after:.0f} MiB")
        await bob.report("through the edge: a watcher that never reads, 1,500 updates written (normal: the same writes, no such watcher)")
        # What it does not read waits in nginx's buffer and the sockets' (bounded by the kernel),
        # then in the server's watcher buffer, which cuts it off once full (test_resource_abuse.py).
        assert hub.watchers("alice") <= 1
        assert after - before < 64 and after < MEMORY_LIMIT_MIB and edge_after < MEMORY_LIMIT_MIB
        never_read.cancel()
        await silent.close()
    await writer.close()
