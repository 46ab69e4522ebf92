"""The aggregator served for real on port 0 and called over a real grpc.aio channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.aggregator.v1 import aggregator_pb2_grpc
from nija.common.v1 import common_pb2 as c

from services.aggregator.app import Config, build_app
from services.runtime.auth import token_interceptors
from services.runtime.security import Security
from services.runtime.errors import reason_of
from services.runtime.server import Listen, RunningServer
from tests.ledger_db import ledger_config
from tests.principals import authenticate, channel_as

WAIT_S = 10  # upper bound for anything that should happen promptly; never slept


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
    # The router: it creates orders, records updates and watches them.
    async with channel_as(server.target, "router") as channel:
        yield aggregator_pb2_grpc.AggregatorServiceStub(channel)


def signal(signal_id: str = "s1", user_id: str = "u1", size: str = "100") -> c.TradeSignal:
    return c.TradeSignal(
        signal_id=signal_id,
        user_id=user_id,
        pair="BTC-USD",
        side=c.SIDE_BUY,
        size_usd=size,
        signal_type=c.SIGNAL_TYPE_ENTRY,
    )


def update(
    status: int, update_id: str, signal_id: str = "s1", user_id: str = "u1", **kw: object
) -> c.ExecutionUpdate:
    return c.ExecutionUpdate(
        user_id=user_id, signal_id=signal_id, status=status, update_id=update_id, **kw
    )


async def create(
    stub: aggregator_pb2_grpc.AggregatorServiceStub, *args: str
) -> a.CreateOrderResponse:
    return await stub.CreateOrder(a.CreateOrderRequest(signal=signal(*args)), timeout=WAIT_S)


async def record(
    stub: aggregator_pb2_grpc.AggregatorServiceStub, sent: c.ExecutionUpdate
) -> a.RecordUpdateResponse:
    return await stub.RecordUpdate(a.RecordUpdateRequest(update=sent), timeout=WAIT_S)


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    raise AssertionError(f"no ErrorInfo in {err}")


async def take(call: grpc.aio.UnaryStreamCall, count: int) -> list[c.ExecutionUpdate]:
    async def read() -> list[c.ExecutionUpdate]:
        return [(await call.read()).update for _ in range(count)]

    return await asyncio.wait_for(read(), WAIT_S)


async def drain(call: grpc.aio.UnaryStreamCall) -> list[c.ExecutionUpdate]:
    """Everything until the server ends the stream."""

    updates: list[c.ExecutionUpdate] = []
    await _collect(call, updates)
    return updates


async def lifecycle(
    stub: aggregator_pb2_grpc.AggregatorServiceStub, signal_id: str, user_id: str = "u1"
) -> None:
    await create(stub, signal_id, user_id)
    for status, name in (
        (c.EXECUTION_STATUS_ROUTING, "routing"),
        (c.EXECUTION_STATUS_QUEUED, "queued"),
        (c.EXECUTION_STATUS_EXECUTING, "executing"),
    ):
        await record(
            stub, update(status, f"{signal_id}:{name}", signal_id, user_id, broker="kraken")
        )
    await record(
        stub,
        update(
            c.EXECUTION_STATUS_FILLED,
            f"{signal_id}:filled",
            signal_id,
            user_id,
            order_quantity="0.002",
            fills=[
                c.Fill(
                    venue_trade_id=f"{user_id}-{signal_id}-t1",
                    price="50000",
                    quantity="0.002",
                    fee="0.1",
                )
            ],
        ),
    )


# -- unary calls ------------------------------------------------------------------------------


async def test_create_record_and_get(stub: aggregator_pb2_grpc.AggregatorServiceStub) -> None:
    created = await create(stub)
    assert created.created and created.update.sequence == 1
    assert created.update.status == c.EXECUTION_STATUS_PENDING

    again = await create(stub)
    assert not again.created and not again.HasField("update")

    await lifecycle(stub, "s1")  # its CreateOrder is a resubmission: no second order
    order = (
        await stub.GetOrder(a.GetOrderRequest(user_id="u1", signal_id="s1"), timeout=WAIT_S)
    ).order
    assert order.status == c.EXECUTION_STATUS_FILLED
    assert (order.broker, order.filled_quantity, order.average_price) == (
        "kraken",
        "0.002",
        "50000",
    )
    assert order.last_sequence == 5
    assert order.signal.size_usd == "100"


async def test_recording_an_update_twice_is_a_duplicate(
    stub: aggregator_pb2_grpc.AggregatorServiceStub,
) -> None:
    await create(stub)
    first = await record(stub, update(c.EXECUTION_STATUS_ROUTING, "s1:routing"))
    again = await record(stub, update(c.EXECUTION_STATUS_ROUTING, "s1:routing"))

    assert not first.duplicate and again.duplicate
    assert again.update == first.update


async def test_refusals_carry_their_code_and_reason(
    stub: aggregator_pb2_grpc.AggregatorServiceStub,
) -> None:
    await create(stub)
    await record(stub, update(c.EXECUTION_STATUS_ROUTING, "s1:routing", broker="kraken"))
    await record(stub, update(c.EXECUTION_STATUS_QUEUED, "s1:queued"))
    await record(stub, update(c.EXECUTION_STATUS_EXECUTING, "s1:executing", order_quantity="1"))

    cases = [
        (
            stub.CreateOrder(a.CreateOrderRequest(signal=signal(size="-1"))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "BAD_SIZE_USD",
        ),
        (
            stub.CreateOrder(a.CreateOrderRequest(signal=signal(size="200"))),
            grpc.StatusCode.ALREADY_EXISTS,
            "SIGNAL_ID_REUSED",
        ),
        (
            stub.RecordUpdate(a.RecordUpdateRequest(update=update(c.EXECUTION_STATUS_ROUTING, ""))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "BAD_UPDATE_ID",
        ),
        (
            stub.RecordUpdate(
                a.RecordUpdateRequest(update=update(c.EXECUTION_STATUS_UNSPECIFIED, "x"))
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "BAD_STATUS",
        ),
        (
            stub.RecordUpdate(
                a.RecordUpdateRequest(
                    update=update(c.EXECUTION_STATUS_ROUTING, "x", signal_id="nope")
                )
            ),
            grpc.StatusCode.NOT_FOUND,
            "ORDER_NOT_FOUND",
        ),
        (
            stub.RecordUpdate(
                a.RecordUpdateRequest(update=update(c.EXECUTION_STATUS_PENDING, "x"))
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ILLEGAL_TRANSITION",
        ),
        (
            stub.RecordUpdate(
                a.RecordUpdateRequest(
                    update=update(
                        c.EXECUTION_STATUS_FILLED,
                        "x",
                        fills=[c.Fill(venue_trade_id="t1", price="1", quantity="2")],
                    )
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "OVERFILL",
        ),
        (
            stub.GetOrder(a.GetOrderRequest(user_id="u1", signal_id="nope")),
            grpc.StatusCode.NOT_FOUND,
            "ORDER_NOT_FOUND",
        ),
    ]
    for call, code, reason in cases:
        err = await refused(call)
        assert (err.code(), reason_of(err)) == (code, reason), err

    # None of the refusals took a sequence number.
    nxt = await record(stub, update(c.EXECUTION_STATUS_CANCELLED, "s1:cancelled"))
    assert nxt.update.sequence == 5


async def test_watch_needs_a_user(stub: aggregator_pb2_grpc.AggregatorServiceStub) -> None:
    err = await refused(drain(stub.WatchUpdates(a.WatchUpdatesRequest())))
    assert (err.code(), reason_of(err)) == (grpc.StatusCode.INVALID_ARGUMENT, "BAD_USER_ID")


# -- watching ---------------------------------------------------------------------------------


async def test_watch_replays_then_goes_live_without_gap_or_duplicate(
    stub: aggregator_pb2_grpc.AggregatorServiceStub,
) -> None:
    for n in range(10):  # history: 10 PENDING updates
        await create(stub, f"h{n}")
    started = asyncio.Event()

    async def writer() -> None:
        for n in range(8):
            if n == 2:
                started.set()
            await lifecycle(stub, f"live{n}")  # 5 updates each

    writing = asyncio.create_task(writer())
    await asyncio.wait_for(started.wait(), WAIT_S)
    call = stub.WatchUpdates(a.WatchUpdatesRequest(user_id="u1"))  # joins mid-write

    seen = await take(call, 10 + 8 * 5)
    await writing
    call.cancel()

    assert [u.sequence for u in seen] == list(range(1, 51))


async def test_watch_resumes_after_a_sequence(
    stub: aggregator_pb2_grpc.AggregatorServiceStub,
) -> None:
    await lifecycle(stub, "s1")
    call = stub.WatchUpdates(a.WatchUpdatesRequest(user_id="u1", after_sequence=3))
    await create(stub, "s2")

    seen = await take(call, 3)
    call.cancel()

    assert [u.sequence for u in seen] == [4, 5, 6]


async def test_watching_a_finished_signal_replays_it_and_ends(
    stub: aggregator_pb2_grpc.AggregatorServiceStub,
) -> None:
    await lifecycle(stub, "s1")
    await lifecycle(stub, "s2")

    seen = await drain(stub.WatchUpdates(a.WatchUpdatesRequest(user_id="u1", signal_id="s1")))

    assert [u.signal_id for u in seen] == ["s1"] * 5
    assert seen[-1].status == c.EXECUTION_STATUS_FILLED


async def test_watching_a_signal_live_ends_after_its_terminal_update(
    stub: aggregator_pb2_grpc.AggregatorServiceStub,
) -> None:
    await create(stub, "s1")
    await create(stub, "other")
    call = stub.WatchUpdates(a.WatchUpdatesRequest(user_id="u1", signal_id="s1"))
    assert [u.sequence for u in await take(call, 1)] == [1]  # replayed, now live

    await record(stub, update(c.EXECUTION_STATUS_ROUTING, "o:routing", signal_id="other"))
    await record(stub, update(c.EXECUTION_STATUS_ROUTING, "s1:routing"))
    await record(stub, update(c.EXECUTION_STATUS_REJECTED, "s1:rejected", reason="NO_BROKER"))
    await record(stub, update(c.EXECUTION_STATUS_CANCELLED, "o:cancelled", signal_id="other"))

    rest = await drain(call)
    assert [(u.sequence, u.status) for u in rest] == [
        (4, c.EXECUTION_STATUS_ROUTING),
        (5, c.EXECUTION_STATUS_REJECTED),
    ]
    assert await call.code() == grpc.StatusCode.OK


async def test_a_watcher_sees_only_its_own_user(
    stub: aggregator_pb2_grpc.AggregatorServiceStub,
) -> None:
    alice = stub.WatchUpdates(a.WatchUpdatesRequest(user_id="alice"))
    bob = stub.WatchUpdates(a.WatchUpdatesRequest(user_id="bob"))

    await asyncio.gather(
        lifecycle(stub, "s1", "alice"), lifecycle(stub, "s1", "bob"), lifecycle(stub, "s2", "bob")
    )
    await create(stub, "last", "alice")  # anything of bob's leaking would arrive before this

    seen_alice = await take(alice, 6)
    seen_bob = await take(bob, 10)
    alice.cancel()
    bob.cancel()

    assert {u.user_id for u in seen_alice} == {"alice"}
    assert [u.sequence for u in seen_alice] == list(range(1, 7))
    assert seen_alice[-1].signal_id == "last"
    assert {u.user_id for u in seen_bob} == {"bob"}
    assert [u.sequence for u in seen_bob] == list(range(1, 11))


async def test_a_slow_watcher_is_cut_off_without_blocking_writers(tmp_path: Path) -> None:
    config = Config(database_path=str(tmp_path / "aggregator.db"), watcher_buffer=4)
    running = await RunningServer(build_app(config, Security(), authenticate), Listen(port=0)).start()
    hub = running.app.hub  # type: ignore[attr-defined]
    # A fixed 64 KiB receive window, so a client that does not read soon stops the server's sends.
    slow_channel = grpc.aio.insecure_channel(
        running.target, options=[("grpc.http2.bdp_probe", 0)], interceptors=token_interceptors("tok-router")
    )
    channel = channel_as(running.target, "router")
    try:
        stub = aggregator_pb2_grpc.AggregatorServiceStub(channel)
        slow = aggregator_pb2_grpc.AggregatorServiceStub(slow_channel).WatchUpdates(
            a.WatchUpdatesRequest(user_id="u1")
        )
        other = stub.WatchUpdates(a.WatchUpdatesRequest(user_id="u2"))
        await create(stub, "s1")
        await record(stub, update(c.EXECUTION_STATUS_ROUTING, "s1:routing"))
        await record(stub, update(c.EXECUTION_STATUS_QUEUED, "s1:queued"))
        assert hub.watchers("u1") == 1

        # Big updates fill the slow client's window, then its 4-update buffer; every write
        # still completes promptly (each one is bounded by WAIT_S).
        written = 3
        while hub.watchers("u1") and written < 500:
            written += 1
            await record(
                stub, update(c.EXECUTION_STATUS_EXECUTING, f"s1:e{written}", reason="x" * 16_000)
            )
        assert hub.watchers("u1") == 0, "the slow watcher was never cut off"

        # Other watchers are unaffected.
        await create(stub, "s1", "u2")
        assert [u.user_id for u in await take(other, 1)] == ["u2"]

        # The slow client gets what was sent, then WATCHER_TOO_SLOW naming where to resume.
        delivered: list[c.ExecutionUpdate] = []
        err = await refused(_collect(slow, delivered))
        assert (err.code(), reason_of(err)) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "WATCHER_TOO_SLOW",
        )
        last = int(error_info(err).metadata["last_sequence"])
        assert [u.sequence for u in delivered] == list(range(1, last + 1))
        assert last < written

        resumed = stub.WatchUpdates(a.WatchUpdatesRequest(user_id="u1", after_sequence=last))
        rest = await take(resumed, written - last)
        resumed.cancel()
        assert [u.sequence for u in rest] == list(range(last + 1, written + 1))
        other.cancel()
    finally:
        await slow_channel.close()
        await channel.close()
        await running.stop(0)


async def _collect(call: grpc.aio.UnaryStreamCall, into: list[c.ExecutionUpdate]) -> None:
    # read() rather than `async for`: a call cannot mix the two, and `take` uses read().
    async def read() -> None:
        while (response := await call.read()) is not grpc.aio.EOF:
            into.append(response.update)

    await asyncio.wait_for(read(), WAIT_S)
