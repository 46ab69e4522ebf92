"""RecordUpdates, the multiplexed ledger writes (issue 10): the aggregator served for real on port
0, written to over one stream, by hand and through LedgerClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.aggregator.v1 import aggregator_pb2_grpc
from nija.common.v1 import common_pb2 as c

from services.aggregator import client as ledger_client
from services.aggregator.app import SERVICE_NAME, App, Config, build_app
from services.aggregator.client import LedgerClient
from services.runtime.errors import ServiceError, reason_of
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from tests.ledger_db import ledger_config, rows
from tests.principals import authenticate, channel_as

WAIT_S = 10  # upper bound for anything that should happen promptly; never slept
ROUTER = Security(token="tok-router")


@pytest.fixture
def config(database_url: str) -> Config:
    return ledger_config(database_url)


@pytest.fixture
async def server(config: Config) -> AsyncIterator[RunningServer]:
    running = await RunningServer(build_app(config, Security(), authenticate), Listen(port=0)).start()
    yield running
    await running.stop(0)


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[aggregator_pb2_grpc.AggregatorServiceStub]:
    async with channel_as(server.target, "router") as channel:
        yield aggregator_pb2_grpc.AggregatorServiceStub(channel)


def signal(signal_id: str, user_id: str = "u1") -> c.TradeSignal:
    return c.TradeSignal(
        signal_id=signal_id, user_id=user_id, pair="BTC-USD", side=c.SIDE_BUY, size_usd="100",
        signal_type=c.SIGNAL_TYPE_ENTRY,
    )


def update(status: int, update_id: str, signal_id: str, user_id: str = "u1", **kw: object) -> c.ExecutionUpdate:
    return c.ExecutionUpdate(user_id=user_id, signal_id=signal_id, status=status, update_id=update_id, **kw)


def lifecycle(signal_id: str, user_id: str) -> list[c.ExecutionUpdate]:
    """A market order's updates after its creation, as the router and the executor write them."""
    return [
        update(c.EXECUTION_STATUS_ROUTING, f"{signal_id}:routing", signal_id, user_id, broker="kraken"),
        update(c.EXECUTION_STATUS_QUEUED, f"{signal_id}:queued", signal_id, user_id),
        update(c.EXECUTION_STATUS_EXECUTING, f"{signal_id}:executing", signal_id, user_id, order_quantity="0.002"),
        update(
            c.EXECUTION_STATUS_FILLED, f"{signal_id}:filled", signal_id, user_id,
            fills=[c.Fill(venue_trade_id=f"{signal_id}-t1", price="50000", quantity="0.002", fee="0.1")],
        ),
    ]


async def create(stub: aggregator_pb2_grpc.AggregatorServiceStub, signal_id: str, user_id: str = "u1") -> None:
    await stub.CreateOrder(a.CreateOrderRequest(signal=signal(signal_id, user_id)), timeout=WAIT_S)


def sequences(database_url: str) -> dict[str, list[int]]:
    by_user: dict[str, list[int]] = {}
    for user_id, sequence in rows(database_url, "SELECT user_id, sequence FROM updates ORDER BY user_id, sequence"):
        by_user.setdefault(user_id, []).append(sequence)
    return by_user


async def exchange(
    stub: aggregator_pb2_grpc.AggregatorServiceStub, requests: list[a.RecordUpdatesRequest]
) -> dict[int, a.RecordUpdatesResponse]:
    """Send every request on one stream, half-close, and collect the answers by request id."""
    call = stub.RecordUpdates(timeout=WAIT_S)
    for request in requests:
        await call.write(request)
    await call.done_writing()
    answers = {r.request_id: r async for r in call}
    assert await call.code() == grpc.StatusCode.OK
    return answers


# -- the server --------------------------------------------------------------------------------


async def test_many_records_on_one_stream_are_all_durable_with_gapless_sequences(
    stub: aggregator_pb2_grpc.AggregatorServiceStub, database_url: str
) -> None:
    users = ["u1", "u2", "u3"]
    orders = [(f"s{i}", users[i % len(users)]) for i in range(30)]
    await asyncio.gather(*(create(stub, s, u) for s, u in orders))
    # Every order's updates, interleaved across orders: stage by stage, all orders at once.
    stages = list(zip(*(lifecycle(s, u) for s, u in orders)))
    request_id = 0
    answers: dict[int, a.RecordUpdatesResponse] = {}
    sent: dict[int, c.ExecutionUpdate] = {}
    call = stub.RecordUpdates(timeout=WAIT_S)
    for stage in stages:
        for u in stage:
            request_id += 1
            sent[request_id] = u
            await call.write(a.RecordUpdatesRequest(request_id=request_id, update=u))
        # The next stage is legal only once this one is recorded: read this stage's answers.
        for _ in stage:
            response = await asyncio.wait_for(call.read(), WAIT_S)
            answers[response.request_id] = response
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK

    assert sorted(answers) == sorted(sent)
    for rid, response in answers.items():
        assert response.WhichOneof("outcome") == "recorded", response
        assert response.recorded.update.update_id == sent[rid].update_id
        assert not response.recorded.duplicate
    # 30 orders x (PENDING + 4): every user's sequence is 1..n, no gap, no duplicate.
    by_user = sequences(database_url)
    assert {u: len(s) for u, s in by_user.items()} == {u: 50 for u in users}
    assert all(s == list(range(1, len(s) + 1)) for s in by_user.values())
    filled = rows(database_url, "SELECT COUNT(*) FROM orders WHERE status = 'filled'")
    assert filled == [(30,)]


async def test_a_duplicate_update_id_is_answered_with_the_stored_update(
    stub: aggregator_pb2_grpc.AggregatorServiceStub, database_url: str
) -> None:
    await create(stub, "s1")
    routing = lifecycle("s1", "u1")[0]
    first = await exchange(stub, [a.RecordUpdatesRequest(request_id=7, update=routing)])
    again = await exchange(stub, [a.RecordUpdatesRequest(request_id=8, update=routing)])
    assert not first[7].recorded.duplicate and again[8].recorded.duplicate
    assert again[8].recorded.update == first[7].recorded.update
    assert rows(database_url, "SELECT COUNT(*) FROM updates WHERE update_id = ?", ("s1:routing",)) == [(1,)]


async def test_refusals_carry_the_unary_calls_code_and_reason_and_the_stream_goes_on(
    stub: aggregator_pb2_grpc.AggregatorServiceStub,
) -> None:
    await create(stub, "s1")
    illegal = update(c.EXECUTION_STATUS_FILLED, "s1:filled-early", "s1")  # PENDING -> FILLED
    unknown = update(c.EXECUTION_STATUS_ROUTING, "nope:routing", "nope")
    malformed = update(c.EXECUTION_STATUS_ROUTING, "", "s1")  # refused before it is queued
    unary: dict[str, grpc.aio.AioRpcError] = {}
    for name, bad in (("illegal", illegal), ("unknown", unknown), ("malformed", malformed)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RecordUpdate(a.RecordUpdateRequest(update=bad), timeout=WAIT_S)
        unary[name] = info.value

    answers = await exchange(stub, [
        a.RecordUpdatesRequest(request_id=1, update=illegal),
        a.RecordUpdatesRequest(request_id=2, update=unknown),
        a.RecordUpdatesRequest(request_id=3, update=malformed),
        a.RecordUpdatesRequest(request_id=4, update=lifecycle("s1", "u1")[0]),  # and then a good one
    ])
    for rid, name, reason in ((1, "illegal", "ILLEGAL_TRANSITION"), (2, "unknown", "ORDER_NOT_FOUND"),
                              (3, "malformed", "BAD_UPDATE_ID")):
        refusal = answers[rid].refusal
        assert answers[rid].WhichOneof("outcome") == "refusal"
        assert (refusal.code, refusal.reason, refusal.message) == (
            unary[name].code().value[0], reason_of(unary[name]), unary[name].details()
        )
        assert refusal.reason == reason
    assert answers[4].recorded.update.status == c.EXECUTION_STATUS_ROUTING


async def test_a_stream_from_a_principal_that_may_not_record_is_refused(server: RunningServer) -> None:
    async with channel_as(server.target, "alice") as channel:
        call = aggregator_pb2_grpc.AggregatorServiceStub(channel).RecordUpdates(timeout=WAIT_S)
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.PERMISSION_DENIED


# -- the client --------------------------------------------------------------------------------


async def test_the_client_records_over_one_stream_and_relays_refusals_as_the_unary_path(
    server: RunningServer, stub: aggregator_pb2_grpc.AggregatorServiceStub, database_url: str
) -> None:
    orders = [(f"s{i}", f"u{i % 4}") for i in range(40)]
    await asyncio.gather(*(create(stub, s, u) for s, u in orders))
    ledger = LedgerClient(server.target, ROUTER)
    unary = LedgerClient(server.target, ROUTER, multiplex=False)
    try:
        async def drive(signal_id: str, user_id: str) -> list[int]:
            return [(await ledger.record(u)).sequence for u in lifecycle(signal_id, user_id)]

        results = await asyncio.gather(*(drive(s, u) for s, u in orders))
        assert all(len(set(r)) == 4 and r == sorted(r) for r in results)
        stream = ledger._stream
        assert stream is not None and stream.failure is None

        # A refusal is the ServiceError the unary path raises: same code, reason and message.
        bad = update(c.EXECUTION_STATUS_ROUTING, "s0:again", "s0", "u0")  # FILLED -> ROUTING
        with pytest.raises(ServiceError) as streamed:
            await ledger.record(bad)
        with pytest.raises(ServiceError) as called:
            await unary.record(bad)
        assert (streamed.value.code, streamed.value.reason, streamed.value.message) == (
            called.value.code, called.value.reason, called.value.message
        )
        assert streamed.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert ledger._stream is stream and stream.failure is None  # the stream went on
    finally:
        await ledger.close()
        await unary.close()
    by_user = sequences(database_url)
    assert all(s == list(range(1, len(s) + 1)) for s in by_user.values())
    assert sum(len(s) for s in by_user.values()) == 40 * 5
    assert stream.failure is not None  # closed with the client


async def test_a_cancelled_record_leaves_nothing_waiting_and_the_others_land(
    server: RunningServer, stub: aggregator_pb2_grpc.AggregatorServiceStub, database_url: str
) -> None:
    await asyncio.gather(*(create(stub, f"s{i}") for i in range(3)))
    ledger = LedgerClient(server.target, ROUTER)
    try:
        await ledger.record(lifecycle("s0", "u1")[0])  # the stream is open
        stream = ledger._stream
        assert stream is not None
        doomed = asyncio.create_task(ledger.record(lifecycle("s1", "u1")[0]))
        await asyncio.sleep(0)  # sent (queued on the stream), not answered
        assert len(stream._waiting) == 1
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert stream._waiting == {}  # no dangling future
        landed = await asyncio.gather(*(ledger.record(u) for u in (lifecycle("s2", "u1")[0], lifecycle("s1", "u1")[0])))
        assert [u.update_id for u in landed] == ["s2:routing", "s1:routing"]
        assert ledger._stream is stream and stream.failure is None
    finally:
        await ledger.close()
    # The cancelled record may or may not have been written before its caller left; the retry
    # after it is then its duplicate: s1:routing is there exactly once either way.
    assert rows(database_url, "SELECT COUNT(*) FROM updates WHERE update_id = ?", ("s1:routing",)) == [(1,)]


async def test_records_pending_across_an_aggregator_restart_land_exactly_once(config: Config, database_url: str) -> None:
    first = await RunningServer(build_app(config, Security(), authenticate), Listen(port=0)).start()
    port = first.port
    orders = [(f"s{i}", f"u{i % 5}") for i in range(60)]
    async with channel_as(first.target, "router") as channel:
        stub = aggregator_pb2_grpc.AggregatorServiceStub(channel)
        await asyncio.gather(*(create(stub, s, u) for s, u in orders))
    ledger = LedgerClient(first.target, ROUTER, timeout_s=2.0, retry_for_s=WAIT_S)
    second: RunningServer | None = None
    try:
        async def drive(signal_id: str, user_id: str) -> list[c.ExecutionUpdate]:
            return [await ledger.record(u) for u in lifecycle(signal_id, user_id)]

        trades = [asyncio.create_task(drive(s, u)) for s, u in orders]
        # Mid-way: once some updates are recorded and others are in flight, the aggregator goes
        # away and a new one comes up on the same port and database.
        async def some_recorded() -> None:
            while rows(database_url, "SELECT COUNT(*) FROM updates WHERE status = 'queued'")[0][0] < 10:
                assert not any(t.done() for t in trades), [t.exception() for t in trades if t.done()]
                await asyncio.sleep(0.005)

        await asyncio.wait_for(some_recorded(), WAIT_S)
        broken = ledger._stream
        await first.stop(0)
        second = await RunningServer(build_app(config, Security(), authenticate), Listen(port=port)).start()
        results = await asyncio.wait_for(asyncio.gather(*trades), WAIT_S * 2)
        assert broken is not None and broken.failure is not None and ledger._stream is not broken
    finally:
        await ledger.close()
        if second is not None:
            await second.stop(0)
        else:
            await first.stop(0)
    assert all([u.status for u in r][-1] == c.EXECUTION_STATUS_FILLED for r in results)
    # Exactly once: every update_id once, every user's sequence gapless.
    counts = rows(database_url, "SELECT update_id, COUNT(*) FROM updates GROUP BY update_id HAVING COUNT(*) > 1")
    assert counts == []
    assert rows(database_url, "SELECT COUNT(*) FROM updates") == [(60 * 5,)]
    assert all(s == list(range(1, len(s) + 1)) for s in sequences(database_url).values())


class _PreviousRelease(App):
    """An aggregator from before RecordUpdates: its service knows only the unary calls."""

    def register(self, server: grpc.aio.Server) -> None:
        s = self.servicer
        handlers = {
            "CreateOrder": grpc.unary_unary_rpc_method_handler(
                s.CreateOrder, request_deserializer=a.CreateOrderRequest.FromString,
                response_serializer=a.CreateOrderResponse.SerializeToString,
            ),
            "RecordUpdate": grpc.unary_unary_rpc_method_handler(
                s.RecordUpdate, request_deserializer=a.RecordUpdateRequest.FromString,
                response_serializer=a.RecordUpdateResponse.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


async def test_an_aggregator_without_record_updates_is_written_to_with_unary_calls(
    config: Config, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await RunningServer(_PreviousRelease(config, Security(), authenticate), Listen(port=0)).start()
    opened = []
    monkeypatch.setattr(ledger_client, "_RecordStream", _counting(ledger_client._RecordStream, opened))
    ledger = LedgerClient(old.target, ROUTER)
    try:
        async with channel_as(old.target, "router") as channel:
            await create(aggregator_pb2_grpc.AggregatorServiceStub(channel), "s1")
        recorded = [await ledger.record(u) for u in lifecycle("s1", "u1")]
        assert [u.sequence for u in recorded] == [2, 3, 4, 5]
        assert len(opened) == 1  # tried once; unary from then on, for the life of the client
        with pytest.raises(ServiceError) as refused:  # and refusals are still refusals
            await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "s1:late", "s1"))
        assert refused.value.reason == "ILLEGAL_TRANSITION"
    finally:
        await ledger.close()
        await old.stop(0)
    assert sequences(database_url) == {"u1": [1, 2, 3, 4, 5]}


def _counting(cls: type, opened: list[object]) -> type:
    class Counted(cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            opened.append(self)

    return Counted
