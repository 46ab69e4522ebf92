"""Webhooks end to end: a real aggregator on port 0, real HTTP receivers on 127.0.0.1 (stdlib
ThreadingHTTPServer), and for kill switches a real permission service (issue 6)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import http.server
import json
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.aggregator.v1 import aggregator_pb2_grpc
from nija.common.v1 import common_pb2 as c
from nija.permission.v1 import permission_pb2, permission_pb2_grpc

from services.aggregator.app import Config, build_app
from services.runtime.channels import open_channel
from services.runtime.errors import reason_of
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from tests.harness import start_permission
from tests.principals import authenticate, channel_as

WAIT_S = 15  # upper bound for anything that should happen; never slept
FAST = {"webhook_backoff_base_s": 0.05, "webhook_backoff_cap_s": 0.2}
FILL, REJECTED, KILL = a.NOTIFICATION_EVENT_FILL, a.NOTIFICATION_EVENT_REJECTED, a.NOTIFICATION_EVENT_KILL_SWITCH


# -- a receiver ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict
    signature_ok: bool
    at: float


class Receiver:
    """Webhook endpoints on one local HTTP server. Per path: the secret to verify signatures with,
    how many attempts of each delivery to answer 500, or to hold the answer (past any timeout)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.secrets: dict[str, str] = {}
        self.fail_first: dict[str, int] = {}
        self.hold: set[str] = set()
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver._handle(self, body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="webhook-receiver",
                                        daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        path, headers = handler.path, {k: v for k, v in handler.headers.items()}
        secret = self.secrets.get(path, "")
        mac = hmac.new(secret.encode(), headers["X-Nija-Timestamp"].encode() + b"." + body, hashlib.sha256)
        ok = bool(secret) and hmac.compare_digest("sha256=" + mac.hexdigest(), headers["X-Nija-Signature"])
        with self._lock:
            earlier = sum(1 for r in self.received if r.headers["X-Nija-Delivery"] == headers["X-Nija-Delivery"])
            self.received.append(Received(path, headers, json.loads(body), ok, time.monotonic()))
        if path in self.hold:
            self.release.wait(WAIT_S)
        status = 500 if earlier < self.fail_first.get(path, 0) else 204
        try:
            handler.send_response(status)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        except OSError:  # the sender gave up waiting
            pass

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def refused_url() -> str:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nobody"


# -- the aggregator -------------------------------------------------------------------------


async def start_aggregator(tmp_path: Path, security: Security | None = None, **settings: object) -> RunningServer:
    config = Config(database_path=str(tmp_path / "aggregator.db"), **{**FAST, **settings})  # type: ignore[arg-type]
    return await RunningServer(build_app(config, security or Security(), authenticate), Listen(port=0)).start()


@pytest.fixture
async def channels() -> AsyncIterator[Callable[[str, str], aggregator_pb2_grpc.AggregatorServiceStub]]:
    opened: list[grpc.aio.Channel] = []

    def stub(target: str, who: str) -> aggregator_pb2_grpc.AggregatorServiceStub:
        opened.append(channel_as(target, who))
        return aggregator_pb2_grpc.AggregatorServiceStub(opened[-1])

    yield stub
    for ch in opened:
        await ch.close()


async def set_webhook(stub: aggregator_pb2_grpc.AggregatorServiceStub, receiver: Receiver, user: str, path: str,
                      events: list[int], url: str | None = None) -> a.Webhook:
    response = await stub.SetWebhook(a.SetWebhookRequest(user_id=user, url=url or receiver.url(path), events=events),
                                     timeout=WAIT_S)
    receiver.secrets[path] = response.secret
    return response.webhook


async def fill_order(router: aggregator_pb2_grpc.AggregatorServiceStub, user: str, signal_id: str) -> float:
    """An order from PENDING to FILLED; returns how long recording its fill took."""
    signal = c.TradeSignal(signal_id=signal_id, user_id=user, pair="BTC-USD", side=c.SIDE_BUY, size_usd="100",
                           signal_type=c.SIGNAL_TYPE_ENTRY)
    await router.CreateOrder(a.CreateOrderRequest(signal=signal), timeout=WAIT_S)
    for status, name in ((c.EXECUTION_STATUS_ROUTING, "routing"), (c.EXECUTION_STATUS_QUEUED, "queued"),
                         (c.EXECUTION_STATUS_EXECUTING, "executing")):
        await router.RecordUpdate(a.RecordUpdateRequest(update=c.ExecutionUpdate(
            user_id=user, signal_id=signal_id, status=status, update_id=f"{signal_id}:{name}", broker="kraken")),
            timeout=WAIT_S)
    filled = c.ExecutionUpdate(user_id=user, signal_id=signal_id, status=c.EXECUTION_STATUS_FILLED,
                               update_id=f"{signal_id}:filled", order_quantity="0.002",
                               fills=[c.Fill(venue_trade_id=f"{user}-{signal_id}", price="50000", quantity="0.002",
                                             fee="0.1", fee_currency="USD")])
    started = time.perf_counter()
    await router.RecordUpdate(a.RecordUpdateRequest(update=filled), timeout=WAIT_S)
    return time.perf_counter() - started


async def reject_order(router: aggregator_pb2_grpc.AggregatorServiceStub, user: str, signal_id: str) -> None:
    signal = c.TradeSignal(signal_id=signal_id, user_id=user, pair="BTC-USD", side=c.SIDE_BUY, size_usd="100",
                           signal_type=c.SIGNAL_TYPE_ENTRY)
    await router.CreateOrder(a.CreateOrderRequest(signal=signal), timeout=WAIT_S)
    await router.RecordUpdate(a.RecordUpdateRequest(update=c.ExecutionUpdate(
        user_id=user, signal_id=signal_id, status=c.EXECUTION_STATUS_REJECTED, update_id=f"{signal_id}:rejected",
        reason="kill switch is on")), timeout=WAIT_S)


async def until(condition: Callable[[], object], what: str, timeout: float = WAIT_S,
                detail: Callable[[], object] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} {detail()}")
        await asyncio.sleep(0.01)


async def deliveries(stub: aggregator_pb2_grpc.AggregatorServiceStub, user: str, webhook_id: str = "") -> list[a.Delivery]:
    response = await stub.ListDeliveries(a.ListDeliveriesRequest(user_id=user, webhook_id=webhook_id), timeout=WAIT_S)
    return list(response.deliveries)


# -- acceptance -----------------------------------------------------------------------------


async def test_a_receiver_failing_the_first_three_attempts_gets_every_notification_signed_once_retries_succeed(
    tmp_path: Path, receiver: Receiver, channels
) -> None:
    server = await start_aggregator(tmp_path)
    try:
        alice, router = channels(server.target, "alice"), channels(server.target, "router")
        hook = await set_webhook(alice, receiver, "alice", "/alice", [FILL])
        receiver.fail_first["/alice"] = 3
        listed = await alice.ListWebhooks(a.ListWebhooksRequest(user_id="alice"), timeout=WAIT_S)
        assert [w.webhook_id for w in listed.webhooks] == [hook.webhook_id]
        assert receiver.secrets["/alice"] not in str(listed)

        await fill_order(router, "alice", "s1")
        await fill_order(router, "alice", "s2")

        async def all_delivered() -> bool:
            found = await deliveries(alice, "alice")
            return len(found) == 2 and all(d.status == a.DELIVERY_STATUS_DELIVERED for d in found)

        deadline = time.monotonic() + WAIT_S
        while not await all_delivered():
            assert time.monotonic() < deadline, await deliveries(alice, "alice")
            await asyncio.sleep(0.02)

        found = await deliveries(alice, "alice", hook.webhook_id)
        assert [(d.attempts, d.event, d.last_error) for d in found] == [(4, FILL, "")] * 2
        assert all(d.HasField("delivered_at") and not d.HasField("next_attempt_at") for d in found)
        requests = receiver.at("/alice")
        assert len(requests) == 8 and all(r.signature_ok for r in requests)
        by_delivery: dict[str, list[Received]] = {}
        for r in requests:
            by_delivery.setdefault(r.headers["X-Nija-Delivery"], []).append(r)
        assert set(by_delivery) == {d.delivery_id for d in found}
        signals = set()
        for delivery_id, attempts in by_delivery.items():
            assert len(attempts) == 4
            assert {r.body["delivery_id"] for r in attempts} == {delivery_id}
            assert {r.headers["X-Nija-Event"] for r in attempts} == {"fill"}
            body = attempts[-1].body
            assert body["event"] == "fill" and body["user_id"] == "alice" and body["sent_at"].endswith("Z")
            assert body["update"]["status"] == "EXECUTION_STATUS_FILLED"
            assert body["update"]["fills"][0]["venue_trade_id"] == f"alice-{body['update']['signal_id']}"
            signals.add(body["update"]["signal_id"])
        assert signals == {"s1", "s2"}
    finally:
        await server.stop(0)


async def test_a_dead_or_hanging_receiver_never_delays_fills_or_another_users_receiver(
    tmp_path: Path, receiver: Receiver, channels
) -> None:
    # Two slots only, and a timeout far longer than anything below should take.
    server = await start_aggregator(tmp_path, webhook_timeout_s=4.0, webhook_concurrency=2)
    try:
        router = channels(server.target, "router")
        admin = channels(server.target, "admin")
        baseline = [await fill_order(router, "carol", f"base-{i}") for i in range(10)]  # no webhooks at all

        receiver.hold.add("/hanging")  # answers only when the test ends
        await set_webhook(admin, receiver, "alice", "/hanging", [FILL])
        refused = await set_webhook(admin, receiver, "alice", "/nobody", [FILL], url=refused_url())
        await set_webhook(admin, receiver, "bob", "/bob", [FILL])

        latencies = []
        for i in range(10):
            latencies.append(await fill_order(router, "alice", f"a-{i}"))
            latencies.append(await fill_order(router, "bob", f"b-{i}"))
        recorded = time.monotonic()

        await until(lambda: len(receiver.at("/bob")) == 10, "bob's 10 fills", timeout=3.0)  # < the 4 s timeout
        assert all(r.signature_ok for r in receiver.at("/bob"))
        healthy_done = max(r.at for r in receiver.at("/bob")) - recorded
        # The dead ones were tried meanwhile: the hanging one holds a POST open, the refused one failed.
        await until(lambda: receiver.at("/hanging"), "the hanging receiver to be called")

        async def refused_tried() -> list[a.Delivery]:
            return [d for d in await deliveries(admin, "alice", refused.webhook_id) if d.attempts >= 1]

        deadline = time.monotonic() + WAIT_S
        while not await refused_tried():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        tried = await refused_tried()
        assert all("refused" in d.last_error.lower() and d.status == a.DELIVERY_STATUS_PENDING for d in tried)
        assert "127.0.0.1" not in tried[0].last_error

        print(f"record() with fills: baseline median {statistics.median(baseline) * 1000:.1f} ms, "
              f"max {max(baseline) * 1000:.1f} ms; with dead webhooks median {statistics.median(latencies) * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms; healthy receiver complete {healthy_done * 1000:.0f} ms after the last fill")
        assert max(latencies) < 1.0  # a POST held for up to 4 s never shows in the ledger's writes
        assert statistics.median(latencies) < statistics.median(baseline) + 0.1
        bob_deliveries = await deliveries(admin, "bob")
        assert [(d.status, d.attempts) for d in bob_deliveries] == [(a.DELIVERY_STATUS_DELIVERED, 1)] * 10
    finally:
        receiver.release.set()
        await server.stop(0)


async def test_rejections_and_kill_switches_reach_only_the_subscribed_webhooks_of_their_user(
    tmp_path: Path, receiver: Receiver, channels
) -> None:
    permission, tokens = await start_permission(tmp_path)
    server = await start_aggregator(
        tmp_path, Security(token=tokens.services["aggregator"]), permission_target=permission.target
    )
    admin_channel = open_channel(permission.target, Security(token=tokens.admin))
    try:
        admin = permission_pb2_grpc.AdminServiceStub(admin_channel)
        alice, bob, router = (channels(server.target, w) for w in ("alice", "bob", "router"))
        await asyncio.wait_for(server.app.notifications.controls_baseline.wait(), WAIT_S)

        await set_webhook(alice, receiver, "alice", "/alice-risk", [REJECTED, KILL])
        await set_webhook(alice, receiver, "alice", "/alice-fills", [FILL])
        await set_webhook(bob, receiver, "bob", "/bob-all", [FILL, REJECTED, KILL])

        await reject_order(router, "alice", "a-rejected")
        await reject_order(router, "bob", "b-rejected")
        await fill_order(router, "alice", "a-filled")
        kill_switch_notifications = 0
        for request in (
            permission_pb2.SetKillSwitchRequest(user_id="alice", on=True, reason="margin call"),
            permission_pb2.SetKillSwitchRequest(user_id="bob", on=True, reason="drawdown"),
            permission_pb2.SetKillSwitchRequest(on=True, reason="venue outage"),
            permission_pb2.SetKillSwitchRequest(on=False, reason="venue back"),
        ):
            await admin.SetKillSwitch(request, timeout=WAIT_S)
            # One at a time: the aggregator follows snapshots, and a switch turned on and off
            # again before it saw the first snapshot is no change to it.
            kill_switch_notifications += 1 if request.user_id else 2
            await until(lambda: sum(1 for r in receiver.received if "kill_switch" in r.body) == kill_switch_notifications,
                        f"kill switch notification {kill_switch_notifications}")
        # Last of all, a fill each: once they are in, everything before them went through.
        await fill_order(router, "alice", "a-last")
        await fill_order(router, "bob", "b-last")

        def summary(path: str) -> list[tuple]:
            out = []
            for r in receiver.at(path):
                assert r.signature_ok and r.body["event"] == r.headers["X-Nija-Event"], r
                if "update" in r.body:
                    out.append((r.body["event"], r.body["user_id"], r.body["update"]["signal_id"]))
                else:
                    ks = r.body["kill_switch"]
                    out.append((r.body["event"], r.body["user_id"], ks["scope"], ks["on"], ks["reason"]))
            return out

        await until(lambda: len(summary("/alice-fills")) == 2 and len(summary("/bob-all")) == 5
                    and len(summary("/alice-risk")) == 4, "every notification",
                    detail=lambda: {p: summary(p) for p in ("/alice-fills", "/bob-all", "/alice-risk")})
        assert sorted(summary("/alice-risk")) == sorted([
            ("rejected", "alice", "a-rejected"),
            ("kill_switch", "alice", "user", True, "margin call"),
            ("kill_switch", "alice", "global", True, "venue outage"),
            ("kill_switch", "alice", "global", False, "venue back"),
        ])
        assert sorted(summary("/alice-fills")) == [("fill", "alice", "a-filled"), ("fill", "alice", "a-last")]
        # Bob's: his own events only, none of alice's.
        assert sorted(summary("/bob-all")) == sorted([
            ("rejected", "bob", "b-rejected"),
            ("kill_switch", "bob", "user", True, "drawdown"),
            ("kill_switch", "bob", "global", True, "venue outage"),
            ("kill_switch", "bob", "global", False, "venue back"),
            ("fill", "bob", "b-last"),
        ])

        # The delivery records agree; kill switches carry sequence 0.
        alice_records = await deliveries(alice, "alice")
        assert len(alice_records) == 6 and all(d.status == a.DELIVERY_STATUS_DELIVERED for d in alice_records)
        assert {d.sequence for d in alice_records if d.event == KILL} == {0}
        assert all(d.sequence > 0 for d in alice_records if d.event != KILL)

        # Bob cannot look at, or remove, alice's webhooks.
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await bob.ListDeliveries(a.ListDeliveriesRequest(user_id="alice"), timeout=WAIT_S)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await admin_channel.close()
        await server.stop(0)
        await permission.stop(0)


async def test_bad_urls_are_invalid_and_a_deleted_webhook_gets_nothing_more(tmp_path: Path, receiver: Receiver,
                                                                           channels) -> None:
    server = await start_aggregator(tmp_path)
    try:
        alice, router = channels(server.target, "alice"), channels(server.target, "router")
        for url in ("ftp://example.com/x", "gopher://127.0.0.1/", "http://", "not a url", "http://u:p@host/"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await alice.SetWebhook(a.SetWebhookRequest(user_id="alice", url=url, events=[FILL]), timeout=WAIT_S)
            assert (info.value.code(), reason_of(info.value)) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_URL"), url

        gone = await set_webhook(alice, receiver, "alice", "/gone", [FILL])
        kept = await set_webhook(alice, receiver, "alice", "/kept", [FILL])
        await alice.DeleteWebhook(a.DeleteWebhookRequest(user_id="alice", webhook_id=gone.webhook_id), timeout=WAIT_S)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await alice.DeleteWebhook(a.DeleteWebhookRequest(user_id="alice", webhook_id=gone.webhook_id), timeout=WAIT_S)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        await fill_order(router, "alice", "s1")
        await until(lambda: receiver.at("/kept"), "the kept webhook's fill")
        assert receiver.at("/gone") == []
        assert {d.webhook_id for d in await deliveries(alice, "alice")} == {kept.webhook_id}
    finally:
        await server.stop(0)
