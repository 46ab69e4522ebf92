"""Resource abuse (issue 11, acceptance 5): thousands of idle streams from one user, a client that
never reads, oversized messages, a flood of connections and pings too fast. Each server stays
within its memory limit and every other client's calls succeed.

The server under test runs in this process; its memory is this process's RSS (/proc/self/status).
The abusive clients run in a process of their own (`tests.integration.abuser`), as a real abuser
would: their client-side work is not done on the server's event loop and their memory is not
counted as the server's. Latency is never asserted (a shared 2-core machine): the bystander's calls
must all succeed within generous deadlines, and its p99 in each phase (normal, during the abuse,
while its result is held) is printed (`pytest -s`) for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.aggregator.v1 import aggregator_pb2_grpc
from nija.common.v1 import common_pb2 as c
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.aggregator import app as aggregator_app
from services.aggregator.app import Config, build_app
from services.aggregator.ledger import MAX_PAGE_BYTES
from services.domain.signal import MAX_METADATA_ENTRIES, MAX_METADATA_VALUE, PARENT_KEY
from services.router import app as router_app
from services.runtime.auth import PrincipalKind
from services.runtime.channels import KEEPALIVE_TIME_MS
from services.runtime.config import ConfigError, load_config
from services.runtime.errors import reason_of
from services.runtime.limits import ServerLimits
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from services.runtime.wire import status_name
from tests.harness import signal, start_mesh
from tests.integration.abuser import WAIT_S, bearer, connection, first, ledger_stub, watch
from tests.principals import authenticate

LIMIT = ServerLimits.max_streams_per_principal
#: The seed's Kubernetes memory limit for every service (deploy/k8s: 1Gi).
MEMORY_LIMIT_MIB = 1024
ROOT = Path(__file__).resolve().parents[2]
ALICE = (PrincipalKind.USER, "alice")
#: A signal's metadata at its maximum: ~33 KiB in every Order that carries the signal.
FAT = {f"k{i}": "p" * MAX_METADATA_VALUE for i in range(MAX_METADATA_ENTRIES)}


def rss_mib(pid: int | str = "self") -> float:
    """A process's resident memory (this one's by default)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@contextlib.asynccontextmanager
async def abuser(target: str, scenario: str, count: int) -> AsyncIterator[dict[str, Any]]:
    """`tests.integration.abuser` doing `scenario` against `target` in a process of its own: what it
    was answered, while it holds what it got; it lets go when the block ends."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.abuser", target, scenario, str(count),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 4 * WAIT_S)
        assert line, f"the abuser ended without an answer (exit {await process.wait()})"
        yield json.loads(line)
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), WAIT_S)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, process.returncode


@contextlib.asynccontextmanager
async def abused(bob: Bystander, target: str, scenario: str, count: int) -> AsyncIterator[dict[str, Any]]:
    """The abuser's answers while it holds them; bob calls without pause until then ("during")."""
    async with contextlib.AsyncExitStack() as stack:
        async with bob.during_abuse():
            answered = await stack.enter_async_context(abuser(target, scenario, count))
        yield answered


async def until(condition: Callable[[], bool]) -> None:
    """Poll `condition` (a server-side fact with no event to wait on) for up to WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def create_order(stub: aggregator_pb2_grpc.AggregatorServiceStub, user: str, signal_id: str,
                       metadata: dict[str, str] | None = None) -> None:
    """A PENDING order written as the router writes it: one update in the user's stream."""
    await stub.CreateOrder(a.CreateOrderRequest(signal=c.TradeSignal(
        signal_id=signal_id, user_id=user, pair="BTC-USD", side=c.SIDE_BUY, size_usd="100",
        signal_type=c.SIGNAL_TYPE_ENTRY, metadata=metadata or {})), metadata=bearer("router"), timeout=WAIT_S)


@dataclasses.dataclass
class Bystander:
    """Bob, on a connection of his own, reading one of his orders over and over: before the
    abuse, while it is under way, and while its result is held (streams, connections open)."""

    stub: aggregator_pb2_grpc.AggregatorServiceStub
    normal: list[float] = dataclasses.field(default_factory=list)
    during: list[float] = dataclasses.field(default_factory=list)
    held: list[float] = dataclasses.field(default_factory=list)

    async def call(self, into: list[float]) -> None:
        started = time.perf_counter()
        await self.stub.GetOrder(a.GetOrderRequest(user_id="bob", signal_id="b-0"), metadata=bearer("bob"), timeout=WAIT_S)
        into.append(time.perf_counter() - started)

    async def calls(self, into: list[float], count: int = 500) -> None:
        for _ in range(count):
            await self.call(into)

    @contextlib.asynccontextmanager
    async def during_abuse(self) -> AsyncIterator[None]:
        """Bob calls without pause while the block runs; every call must succeed."""
        done = asyncio.Event()

        async def loop() -> None:
            while not done.is_set():
                await self.call(self.during)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            done.set()
            await task  # raises if one of bob's calls failed

    async def report(self, scenario: str) -> None:
        """Bob's calls while the abuse's result is held, then his p99 in each phase, printed."""
        await self.calls(self.held)
        normal = p99(self.normal)
        figures = ", ".join(
            f"{phase} {p99(samples) * 1e3:.2f} ms ({p99(samples) / normal:.1f}x, {len(samples)} calls)"
            for phase, samples in (("during", self.during), ("held", self.held)) if samples
        )
        print(f"\n[p99] {scenario}: bob's GetOrder normal {normal * 1e3:.2f} ms; {figures}")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(0.99 * (len(ordered) - 1))]


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The aggregator alone (SQLite), with its default limits; alice and bob have an order each."""
    running = await RunningServer(
        build_app(Config(database_path=str(tmp_path / "ledger.db")), Security(), authenticate), Listen(port=0)
    ).start()
    async with connection(running.target) as channel:
        await create_order(ledger_stub(channel), "alice", "a-0")
        await create_order(ledger_stub(channel), "bob", "b-0")
    yield running
    await running.stop(0)


@pytest.fixture
async def bob(ledger: RunningServer) -> AsyncIterator[Bystander]:
    async with connection(ledger.target) as channel:
        bystander = Bystander(ledger_stub(channel))
        await bystander.calls(bystander.normal)
        yield bystander


async def test_thousands_of_idle_streams_from_one_user_stop_at_the_limit_in_bounded_memory(
    ledger: RunningServer, bob: Bystander, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nija.security")
    limiter = ledger.principal_limiter
    before = rss_mib()
    async with abused(bob, ledger.target, "streams", 2000) as answered:
        held = rss_mib()
        print(f"\n[rss] 2,000 idle streams tried, {answered['admitted']} held: {before:.0f} -> {held:.0f} MiB")
        await bob.report("2,000 idle WatchUpdates streams from alice")

        assert answered == {"admitted": LIMIT, "refused": {"RESOURCE_EXHAUSTED TOO_MANY_STREAMS": 2000 - LIMIT}}
        assert limiter.open_streams(*ALICE) == LIMIT
        assert held - before < 64 and held < MEMORY_LIMIT_MIB
        events = [r for r in caplog.records if r.name == "nija.security"]
        assert len(events) == 2000 - LIMIT
        assert {(r.principal, r.reason) for r in events} == {("user:alice", "TOO_MANY_STREAMS")}
        # Bob's own stream is admitted while alice holds all of hers.
        async with connection(ledger.target) as channel:
            assert (await first(watch(channel, "bob"))).update.signal_id == "b-0"

    await until(lambda: limiter.open_streams(*ALICE) == 0)  # every slot given back when she goes
    async with connection(ledger.target) as channel:
        assert (await first(watch(channel, "alice"))).update.signal_id == "a-0"


async def test_a_client_that_never_reads_is_cut_off_while_the_server_keeps_writing_in_bounded_memory(
    ledger: RunningServer, bob: Bystander
) -> None:
    hub = ledger.app.hub
    # A fixed 64 KiB window (no BDP growth): the most a client can make the server hold back.
    silent = connection(ledger.target, http2__bdp_probe=0)
    never_read = watch(silent, "alice")
    await until(lambda: hub.watchers("alice") == 1)
    bob_sees: list[str] = []
    writer = connection(ledger.target)
    orders = iter(range(1500))

    async def write() -> None:
        for n in orders:  # ~1 KiB updates: the window fills after ~60 of them
            await create_order(ledger_stub(writer), "alice", f"a-{n + 1}", {PARENT_KEY: "p" * MAX_METADATA_VALUE})
            if n % 150 == 0:
                await create_order(ledger_stub(writer), "bob", f"b-{n + 1}")

    async def follow_bob() -> None:
        async with connection(ledger.target) as channel:
            async for response in watch(channel, "bob"):
                bob_sees.append(response.update.signal_id)

    following = asyncio.create_task(follow_bob())
    before = rss_mib()
    async with bob.during_abuse():
        await asyncio.gather(*(write() for _ in range(8)))  # no write waits for the silent watcher
    after = rss_mib()
    print(f"\n[rss] 1,500 updates for a watcher that never reads: {before:.0f} -> {after:.0f} MiB")
    await bob.report("a WatchUpdates client that never reads, 1,500 updates written for its user")

    assert hub.watchers("alice") == 0  # cut off once its buffer was full: nothing more is held for it
    assert after - before < 64 and after < MEMORY_LIMIT_MIB
    await until(lambda: len(bob_sees) == 11)  # b-0 and the 10 written meanwhile
    following.cancel()
    # Reading at last: what fit in its window, then the reason it was cut off.
    received, error = 0, None
    try:
        async for _ in never_read:
            received += 1
    except grpc.aio.AioRpcError as exc:
        error = exc
    assert error is not None and (error.code(), reason_of(error)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "WATCHER_TOO_SLOW")
    assert received < 1500 - hub.capacity
    await until(lambda: ledger.principal_limiter.open_streams(*ALICE) == 0)
    await silent.close()
    await writer.close()


async def test_oversized_messages_are_resource_exhausted_both_ways_and_the_server_keeps_serving(
    ledger: RunningServer, bob: Bystander
) -> None:
    async with connection(ledger.target) as channel:
        alice = ledger_stub(channel)
        # 150 orders whose signals carry the most metadata allowed (~33 KiB each): the abuser asks
        # for them in one page (~5 MiB, over the 4 MiB a response may be), besides its requests
        # over the limit.
        for n in range(150):
            await create_order(alice, "alice", f"big-{n}", FAT)
        async with abused(bob, ledger.target, "oversized", 10) as answered:
            pass
        await bob.report("oversized requests from alice, and pages of her large orders")
        # The requests are refused; the page is cut to fit (ledger.MAX_PAGE_BYTES), not refused.
        assert answered == {"answers": {"RESOURCE_EXHAUSTED": 20, "OK": 10}}
        page = await alice.ListOrders(a.ListOrdersRequest(user_id="alice", page_size=150), metadata=bearer("alice"), timeout=WAIT_S)
        assert 0 < len(page.orders) < 150 and page.next_page_token and page.ByteSize() <= MAX_PAGE_BYTES
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=WAIT_S)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_flood_of_connections_from_one_client_holds_no_more_streams_than_the_limit(
    ledger: RunningServer, bob: Bystander
) -> None:
    before = rss_mib()
    async with abused(bob, ledger.target, "connections", 300) as answered:
        held = rss_mib()
        print(f"\n[rss] 300 connections, one stream each tried: {before:.0f} -> {held:.0f} MiB")
        await bob.report("300 connections from alice, one watch stream each")
        # The limit spans connections; her unary calls are served.
        assert answered == {"admitted": LIMIT, "refused": {"RESOURCE_EXHAUSTED TOO_MANY_STREAMS": 300 - LIMIT},
                            "unary": {"OK": 300}}
        assert ledger.principal_limiter.open_streams(*ALICE) == LIMIT
        assert held - before < 96 and held < MEMORY_LIMIT_MIB
    await until(lambda: ledger.principal_limiter.open_streams(*ALICE) == 0)


async def test_a_long_idle_stream_survives_our_keepalive_and_a_client_pinging_too_fast_is_cut_off(tmp_path: Path) -> None:
    """The production ratio, scaled down: our clients ping every 30 s, servers take a ping every
    10 s. Here 2 s and 1.5 s (gRPC core sends at most one ping a second); the abusive client pings
    every second. The sleeps are gRPC core's timers, which cannot be injected."""
    app = build_app(Config(database_path=str(tmp_path / "ledger.db")), Security(), authenticate)
    app.limits = dataclasses.replace(app.limits, min_ping_interval_ms=1500)
    server = await RunningServer(app, Listen(port=0)).start()
    ours = connection(server.target, keepalive_time_ms=2000)
    abusive = connection(server.target, keepalive_time_ms=1000)
    writer = connection(server.target)
    try:
        await create_order(ledger_stub(writer), "alice", "a-0")
        quiet, pinging = watch(ours, "alice"), watch(abusive, "alice")
        assert (await first(quiet)).update.signal_id == "a-0"
        idle_since = time.monotonic()
        assert (await first(pinging)).update.signal_id == "a-0"

        cut = await first(pinging)  # the 4th ping, 3 strikes: GOAWAY
        assert isinstance(cut, grpc.aio.AioRpcError) and cut.code() == grpc.StatusCode.UNAVAILABLE, cut
        assert cut.details() == "Too many pings"
        # Idle for 4.5 of our ping intervals: with gRPC's default enforcement (a ping per 5 min,
        # 2 strikes) our 4th ping would have been cut off too.
        await asyncio.sleep(max(0.0, 9.0 - (time.monotonic() - idle_since)))
        await create_order(ledger_stub(writer), "alice", "a-1")
        assert (await first(quiet)).update.signal_id == "a-1"
    finally:
        for channel in (ours, abusive, writer):
            await channel.close()
        await server.stop(0)


async def test_the_router_refuses_a_users_stream_past_its_limit_and_serves_everyone_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nija.security")
    mesh = await start_mesh(tmp_path, router={"max_streams_per_principal": "3"})
    try:
        limiter = mesh.servers["router"].principal_limiter
        alice = router_pb2_grpc.RouterServiceStub(mesh.channel("router", mesh.tokens.users["alice"]))
        bob = router_pb2_grpc.RouterServiceStub(mesh.channel("router", mesh.tokens.users["bob"]))
        held = [alice.SubmitSignals() for _ in range(3)]  # open, idle: no signal sent
        await until(lambda: limiter.open_streams(*ALICE) == 3)
        extra = await first(alice.SubmitSignals())
        assert isinstance(extra, grpc.aio.AioRpcError)
        assert (extra.code(), reason_of(extra)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
        events = [r for r in caplog.records if r.name == "nija.security" and r.reason == "TOO_MANY_STREAMS"]
        assert [(r.principal, r.method) for r in events] == [("user:alice", "/nija.router.v1.RouterService/SubmitSignals")]

        async def trade(stub: router_pb2_grpc.RouterServiceStub, user: str, signal_id: str) -> str:
            request = router_pb2.SubmitSignalRequest(signal=signal(user, usd="100", signal_id=signal_id))
            updates = [r.update async for r in stub.SubmitSignal(request, timeout=WAIT_S)]
            return status_name(updates[-1].status)

        # Bob trades; the router's own streams (executors, ledger) are not limited; an admin
        # acts for alice while she is at her limit.
        assert await trade(bob, "bob", "bob-1") == "filled"
        assert await trade(mesh.router, "alice", "admin-for-alice") == "filled"
        held[0].cancel()
        await until(lambda: limiter.open_streams(*ALICE) == 2)
        assert await trade(alice, "alice", "alice-1") == "filled"
    finally:
        await mesh.stop()


def test_the_stream_limit_is_a_checked_setting_and_pings_are_held_to_what_our_clients_send() -> None:
    assert load_config(router_app.Config, {"max_streams_per_principal": "3"}).limits().max_streams_per_principal == 3
    for module in (router_app, aggregator_app):
        with pytest.raises(ConfigError):
            load_config(module.Config, {"max_streams_per_principal": "0"})
    assert ServerLimits().min_ping_interval_ms * 3 <= KEEPALIVE_TIME_MS
    with pytest.raises(ConfigError):  # it would cut off every one of our own clients
        ServerLimits(min_ping_interval_ms=KEEPALIVE_TIME_MS + 1)
