"""RouterService/SubmitSignals (issue 10): many signals on one bidirectional stream, each with
SubmitSignal's semantics, every update tagged with its signal, refusals that leave the stream
going, a per-stream in-flight limit, and orders that outlive a client that goes away."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc
from nija.simexchange.v1 import simexchange_pb2

from services.client import NijaClient, SignalRefusal, Status, Update, make_signal
from services.domain.brokers import BROKERS
from services.router.multiplex import multiplex
from services.runtime.errors import reason_of
from services.runtime.wire import status_name
from tests.harness import InProcessMesh, signal, start_mesh

Request = router_pb2.SubmitSignalsRequest


class Outbox:
    """The request side of a stream, fed by the test as it goes; `close()` half-closes it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()

    def send(self, pb: common_pb2.TradeSignal, after_sequence: int = 0) -> None:
        self._queue.put_nowait(Request(signal=pb, after_sequence=after_sequence))

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def requests(self) -> AsyncIterator[Request]:
        while (request := await self._queue.get()) is not None:
            yield request


def router(mesh: InProcessMesh, user: str) -> router_pb2_grpc.RouterServiceStub:
    return router_pb2_grpc.RouterServiceStub(mesh.channel("router", mesh.tokens.users[user]))


def by_signal(responses: list[router_pb2.SubmitSignalsResponse]) -> dict[str, list[router_pb2.SubmitSignalsResponse]]:
    out: dict[str, list[router_pb2.SubmitSignalsResponse]] = defaultdict(list)
    for response in responses:
        event = response.update if response.HasField("update") else response.refusal
        out[event.signal_id].append(response)
    return out


def refusal_of(responses: list[router_pb2.SubmitSignalsResponse]) -> tuple[grpc.StatusCode, str]:
    [response] = responses  # a refused signal gets exactly one message: its refusal
    assert response.HasField("refusal"), response
    refusal = response.refusal.refusal
    assert refusal.message
    return next(c for c in grpc.StatusCode if c.value[0] == refusal.code), refusal.reason


def assert_filled_in_order(responses: list[router_pb2.SubmitSignalsResponse]) -> None:
    assert all(r.HasField("update") for r in responses), responses
    updates = [r.update for r in responses]
    sequences = [u.sequence for u in updates]
    assert sequences == sorted(set(sequences)), sequences
    assert status_name(updates[0].status) == "pending" and status_name(updates[-1].status) == "filled"


async def not_in_ledger(mesh: InProcessMesh, user: str, signal_id: str) -> bool:
    try:
        await mesh.aggregator.GetOrder(aggregator_pb2.GetOrderRequest(user_id=user, signal_id=signal_id))
    except grpc.aio.AioRpcError as exc:
        return exc.code() == grpc.StatusCode.NOT_FOUND
    return False


async def final_status(mesh: InProcessMesh, user: str, signal_id: str) -> str:
    """The signal's terminal state, from the ledger's stream (which ends after it); "open" when
    it has none within 10 s (an order nobody drives)."""
    call = mesh.aggregator.WatchUpdates(aggregator_pb2.WatchUpdatesRequest(user_id=user, signal_id=signal_id), timeout=10)
    updates = []
    try:
        async for response in call:
            updates.append(response.update)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
        return "open"
    return status_name(updates[-1].status)


async def slow_venues(mesh: InProcessMesh, latency_ms: int) -> None:
    for broker in BROKERS:
        await mesh.sim.SetFault(simexchange_pb2.SetFaultRequest(
            broker=broker, mode=simexchange_pb2.FAULT_MODE_NONE, latency_ms=latency_ms), timeout=5)


def followers() -> list[asyncio.Task]:
    """The router's tasks following one signal each (the mesh runs in this event loop)."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("submit-signals-") and not t.done()]


# ---- many signals --------------------------------------------------------------------------------


async def enrol(mesh: InProcessMesh, users: list[str], strategy: str) -> str:
    """Users subscribed to `strategy`, with room for a burst; the strategy's token."""
    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    for user in users:
        await admin.PutUser(permission_pb2.PutUserRequest(user=permission_pb2.UserPermissions(
            user_id=user, enabled=True, allowed_brokers=list(BROKERS), max_order_size_usd="1000",
            limits=permission_pb2.RiskLimits(trades_per_second="100", trade_burst=100))))
        await admin.SetSubscription(permission_pb2.SetSubscriptionRequest(
            strategy_id=strategy, user_id=user, subscribed=True))
    created = await admin.CreateToken(permission_pb2.CreateTokenRequest(
        kind=permission_pb2.PRINCIPAL_KIND_STRATEGY, subject=strategy))
    return created.token


async def test_200_signals_for_several_users_on_one_stream_all_fill(mesh: InProcessMesh) -> None:
    users = [f"hft-{i}" for i in range(4)]
    token = await enrol(mesh, users, "hft")
    signals = [
        make_signal(users[i % 4], ("BTC-USD", "ETH-USD")[i % 2], "buy", "50",
                    signal_id=f"many-{i:03d}")
        for i in range(200)
    ]
    not_subscribed = make_signal("alice", "BTC-USD", "buy", "50", signal_id="many-alice")
    async with NijaClient(mesh.servers["router"].target, token=token, environ={}) as nija:
        # Ends on its own once the client half-closed and every signal is done (else: its deadline).
        events = [e async for e in nija.submit_many([*signals[:100], not_subscribed, *signals[100:]], timeout=90)]

    refused = [e for e in events if isinstance(e, SignalRefusal)]
    assert [(r.signal_id, r.user_id, r.code, r.reason) for r in refused] == [
        ("many-alice", "alice", grpc.StatusCode.PERMISSION_DENIED, "ACTING_FOR_ANOTHER_USER")]
    events = [e for e in events if e not in refused]
    updates: dict[str, list[Update]] = defaultdict(list)
    for event in events:
        assert isinstance(event, Update)
        updates[event.signal_id].append(event)
    assert set(updates) == {s.signal_id for s in signals}
    for pb in signals:
        mine = updates[pb.signal_id]
        assert {u.user_id for u in mine} == {pb.user_id}
        sequences = [u.sequence for u in mine]
        assert sequences == sorted(set(sequences)), (pb.signal_id, sequences)
        assert mine[0].status is Status.PENDING and mine[-1].status is Status.FILLED, (pb.signal_id, mine[-1])
        assert not any(u.terminal for u in mine[:-1])
    # What came back is what the ledger holds: every update of every order, one order per signal.
    stored = dict(mesh.ledger_rows(
        "SELECT signal_id, count(*) FROM updates WHERE signal_id LIKE 'many-%' GROUP BY signal_id"))
    assert stored == {sid: len(mine) for sid, mine in updates.items()}
    assert mesh.ledger_rows("SELECT count(*), min(status), max(status) FROM orders WHERE signal_id LIKE 'many-%'") == [
        (200, "filled", "filled")]


# ---- refusals ------------------------------------------------------------------------------------


async def test_bad_signals_are_refused_as_submit_signal_refuses_them_and_the_rest_fill(mesh: InProcessMesh) -> None:
    alice = router(mesh, "alice")
    earlier = signal(user="alice", usd="100", signal_id="mix-earlier")
    first = [r.update async for r in alice.SubmitSignal(router_pb2.SubmitSignalRequest(signal=earlier), timeout=30)]
    assert status_name(first[-1].status) == "filled"

    bad = {
        "mix-bad-size": signal(user="alice", usd="0", signal_id="mix-bad-size"),
        "mix-bad-pair": signal(user="alice", pair="NOPE-USD", signal_id="mix-bad-pair"),
        "mix-earlier": signal(user="alice", usd="101", signal_id="mix-earlier"),  # its id, other contents
    }
    good = [signal(user="alice", signal_id="mix-good-1"), signal(user="alice", pair="ETH-USD", signal_id="mix-good-2")]
    requests = [Request(signal=good[0]), *(Request(signal=pb) for pb in bad.values()), Request(signal=good[1]),
                # A replay of the earlier signal: only what came after its ROUTING update.
                Request(signal=earlier, after_sequence=first[1].sequence)]
    responses = [r async for r in alice.SubmitSignals(iter(requests), timeout=60)]
    got = by_signal(responses)

    for pb in good:
        assert_filled_in_order(got[pb.signal_id])
    refusals = {sid: refusal_of([r for r in got[sid] if r.HasField("refusal")]) for sid in bad}
    assert refusals == {
        "mix-bad-size": (grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIZE_USD"),
        "mix-bad-pair": (grpc.StatusCode.NOT_FOUND, "UNKNOWN_PAIR"),
        "mix-earlier": (grpc.StatusCode.ALREADY_EXISTS, "SIGNAL_ID_REUSED"),
    }
    assert [r.refusal.user_id for sid in bad for r in got[sid] if r.HasField("refusal")] == ["alice"] * 3
    replayed = [r.update.sequence for r in got["mix-earlier"] if r.HasField("update")]
    assert replayed == [u.sequence for u in first[2:]]
    # ... the very codes and reasons SubmitSignal answers the same signals with.
    for sid, pb in bad.items():
        with pytest.raises(grpc.aio.AioRpcError) as alone:
            _ = [r async for r in alice.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=10)]
        assert (alone.value.code(), reason_of(alone.value)) == refusals[sid]

    # Nothing written for the refused: no order, and the earlier one untouched.
    assert await not_in_ledger(mesh, "alice", "mix-bad-size")
    assert await not_in_ledger(mesh, "alice", "mix-bad-pair")
    listed = await mesh.aggregator.ListOrders(aggregator_pb2.ListOrdersRequest(user_id="alice", page_size=1000))
    mixed = {o.signal_id: o for o in listed.orders if o.signal_id.startswith("mix-")}
    assert set(mixed) == {"mix-earlier", "mix-good-1", "mix-good-2"}
    assert mixed["mix-earlier"].last_sequence == first[-1].sequence


async def test_a_signal_for_another_user_is_refused_and_logged_and_the_callers_own_fills(
    mesh: InProcessMesh, caplog: pytest.LogCaptureFixture
) -> None:
    alice = router(mesh, "alice")
    requests = [Request(signal=signal(user="bob", pair="ETH-USD", signal_id="as-bob")),
                Request(signal=signal(user="alice", signal_id="as-alice"))]
    with caplog.at_level(logging.WARNING, logger="nija.security"):
        responses = [r async for r in alice.SubmitSignals(iter(requests), timeout=30)]
    got = by_signal(responses)
    assert refusal_of(got["as-bob"]) == (grpc.StatusCode.PERMISSION_DENIED, "ACTING_FOR_ANOTHER_USER")
    assert got["as-bob"][0].refusal.user_id == "bob"
    assert_filled_in_order(got["as-alice"])
    assert await not_in_ledger(mesh, "bob", "as-bob")
    # Logged as the interceptor logs its refusals: once, on the security logger, with who and what.
    [event] = [r for r in caplog.records if r.name == "nija.security" and getattr(r, "reason", "") == "ACTING_FOR_ANOTHER_USER"]
    assert (event.method, event.principal) == ("/nija.router.v1.RouterService/SubmitSignals", "user:alice")


async def test_an_unexpected_error_in_one_signal_refuses_it_internal_and_the_stream_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The multiplexer alone, over a stand-in for the engine's submit."""

    async def submit(pb: common_pb2.TradeSignal, budget: float | None, after: int) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        yield common_pb2.ExecutionUpdate(signal_id=pb.signal_id, user_id=pb.user_id, sequence=1)
        if pb.signal_id == "bug":
            raise RuntimeError("a bug")
        if pb.signal_id == "upstream":
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "ledger down")

    async def requests() -> AsyncIterator[Request]:
        for sid in ("bug", "upstream", "fine"):
            yield Request(signal=signal(signal_id=sid))

    with caplog.at_level(logging.ERROR, logger="services.router.multiplex"):
        out = [r async for r in multiplex(requests(), submit, lambda pb: None, lambda: None, 10)]
    got = by_signal(out)
    assert [r.WhichOneof("event") for r in got["bug"]] == ["update", "refusal"]
    assert (got["bug"][1].refusal.refusal.code, got["bug"][1].refusal.refusal.reason) == (13, "INTERNAL")
    assert (got["upstream"][1].refusal.refusal.code, got["upstream"][1].refusal.refusal.reason) == (14, "UNAVAILABLE")
    assert [r.WhichOneof("event") for r in got["fine"]] == ["update"]
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


# ---- back-pressure and going away ----------------------------------------------------------------


async def test_a_signal_beyond_the_streams_in_flight_limit_is_refused_and_not_submitted(tmp_path: Path) -> None:
    mesh = await start_mesh(tmp_path, router={"max_stream_in_flight": "2"})
    try:
        await slow_venues(mesh, 400)  # the first two are still in flight when the third arrives
        outbox = Outbox()
        call = router(mesh, "alice").SubmitSignals(outbox.requests(), timeout=60)
        pbs = [signal(user="alice", usd="60", kind=common_pb2.SIGNAL_TYPE_EXIT, signal_id=f"limit-{i}") for i in range(3)]
        for pb in pbs:
            outbox.send(pb)
        got: dict[str, list[router_pb2.SubmitSignalsResponse]] = defaultdict(list)

        def filled(sid: str) -> bool:
            return bool(got[sid]) and got[sid][-1].HasField("update") and status_name(got[sid][-1].update.status) == "filled"

        while not (filled("limit-0") and filled("limit-1")):
            response = await call.read()
            assert response is not grpc.aio.EOF
            for sid, mine in by_signal([response]).items():
                got[sid] += mine
        assert refusal_of(got["limit-2"]) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STREAM_IN_FLIGHT_LIMIT")
        assert await not_in_ledger(mesh, "alice", "limit-2")

        # Room again once the first two are done: the same signal goes through as a new order.
        outbox.send(pbs[2])
        outbox.close()
        while (response := await call.read()) is not grpc.aio.EOF:
            got["limit-2"].append(response)
        assert_filled_in_order(got["limit-2"][1:])
        for sid in ("limit-0", "limit-1"):
            assert_filled_in_order(got[sid])
        assert await call.code() == grpc.StatusCode.OK
    finally:
        await mesh.stop()


async def test_a_client_that_goes_away_leaves_every_order_it_started_to_finish(mesh: InProcessMesh) -> None:
    await slow_venues(mesh, 300)  # orders are still open when the client goes
    pbs = [signal(user="alice", pair=("BTC-USD", "ETH-USD")[i % 2], usd="40", signal_id=f"gone-{i}") for i in range(12)]
    call = router(mesh, "alice").SubmitSignals(iter([Request(signal=pb) for pb in pbs]), timeout=60)
    seen: set[str] = set()
    async for response in call:
        seen.add(response.update.signal_id)
        if len(seen) == 3:
            call.cancel()  # the client goes away with most orders open, some maybe not yet created
            break
    assert call.cancelled()

    # The router stops following them (a signal whose order was being created finishes that first).
    for _ in range(100):
        if not followers():
            break
        await asyncio.sleep(0.1)
    assert not followers()
    # Every order that exists ends, though nobody listens: none is left PENDING with nobody driving it.
    finals = {}
    for pb in pbs:
        if not await not_in_ledger(mesh, "alice", pb.signal_id):
            finals[pb.signal_id] = await final_status(mesh, "alice", pb.signal_id)
    assert seen <= set(finals)
    assert set(finals.values()) == {"filled"}, finals


async def test_a_submit_signal_caller_that_goes_away_while_its_order_is_created_leaves_it_to_finish(
    mesh: InProcessMesh,
) -> None:
    """SubmitSignal, not the stream: the caller cancels after its reservation is made and while the
    ledger is creating the order. The order is still driven to its end (nothing left PENDING
    with nobody driving it), and the same signal sent again re-attaches to it."""
    ledger = mesh.servers["router"].app.engine._ledger
    creating, create_order = asyncio.Event(), ledger.create_order

    async def slow_create_order(*args, **kwargs):
        creating.set()
        await asyncio.sleep(0.3)
        return await create_order(*args, **kwargs)

    ledger.create_order = slow_create_order
    pb = signal(user="alice", usd="40", signal_id="gone-while-created")
    call = router(mesh, "alice").SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=30)
    await asyncio.wait_for(creating.wait(), 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call.read()
    ledger.create_order = create_order

    assert await final_status(mesh, "alice", pb.signal_id) == "filled"
    again = [r.update async for r in router(mesh, "alice").SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=30)]
    assert [status_name(u.status) for u in again][-1] == "filled"
    assert len({u.update_id for u in again}) == len(again)
    assert [u.sequence for u in again] == sorted(u.sequence for u in again)
