"""Live fan-out and the replay-then-live switch, without a database or a network."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2
from nija.common.v1 import common_pb2 as c

from services.aggregator.hub import Hub, Overflowed
from services.aggregator.watch import watch
from services.runtime.errors import ServiceError


def upd(
    sequence: int,
    user_id: str = "u1",
    signal_id: str = "s1",
    status: int = c.EXECUTION_STATUS_EXECUTING,
) -> c.ExecutionUpdate:
    return c.ExecutionUpdate(user_id=user_id, signal_id=signal_id, sequence=sequence, status=status)


class FakeLedger:
    """Stored updates; `during_read` runs inside replay, as a commit racing the read would."""

    def __init__(self, hub: Hub, stored: list[c.ExecutionUpdate]) -> None:
        self.hub = hub
        self.stored = stored
        self.during_read: list[c.ExecutionUpdate] = []

    async def get_order(self, user_id: str, signal_id: str) -> aggregator_pb2.Order:
        """The order's status: that of its latest stored update (NOT_FOUND before the first)."""
        mine = [u for u in self.stored if u.user_id == user_id and u.signal_id == signal_id]
        if not mine:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND", signal_id)
        return aggregator_pb2.Order(user_id=user_id, signal_id=signal_id, status=mine[-1].status)

    async def replay(
        self, user_id: str, after: int, signal_id: str | None, limit: int
    ) -> list[c.ExecutionUpdate]:
        for update in self.during_read:  # committed (and published) before the read
            self.stored.append(update)
            self.hub.publish(update)
        self.during_read = []
        rows = [
            u
            for u in self.stored
            if u.user_id == user_id
            and u.sequence > after
            and (not signal_id or u.signal_id == signal_id)
        ]
        return rows[:limit]


async def first(stream: object, count: int) -> list[int]:
    out = []
    async for update in stream:  # type: ignore[attr-defined]
        out.append(update.sequence)
        if len(out) == count:
            break
    return out


async def test_publish_reaches_only_that_users_watchers() -> None:
    hub = Hub(capacity=10)
    with hub.subscribe("alice") as alice, hub.subscribe("bob") as bob:
        hub.publish(upd(1, "alice"))
        hub.publish(upd(1, "bob"))
        hub.publish(upd(2, "alice"))

        assert [(await alice.next()).sequence for _ in range(2)] == [1, 2]
        assert (await bob.next()).user_id == "bob"
    assert hub.watchers("alice") == hub.watchers("bob") == 0


async def test_a_full_buffer_cuts_the_watcher_off_and_publish_never_waits() -> None:
    hub = Hub(capacity=2)
    slow = hub.subscribe("u1")
    fast = hub.subscribe("u1")
    for n in range(1, 4):
        hub.publish(upd(n))
        assert (await fast.next()).sequence == n

    assert slow.overflowed and hub.watchers("u1") == 1
    with pytest.raises(Overflowed):
        await slow.next()


async def test_watch_switches_to_live_without_gap_or_duplicate() -> None:
    hub = Hub(capacity=10)
    ledger = FakeLedger(hub, [upd(1), upd(2)])
    ledger.during_read = [upd(3)]  # in the replay and in the live buffer
    stream = watch(ledger, hub, "u1", page=2)  # type: ignore[arg-type]

    async def later() -> None:
        await asyncio.sleep(0)
        hub.publish(upd(4))

    task = asyncio.create_task(later())
    assert await asyncio.wait_for(first(stream, 4), 5) == [1, 2, 3, 4]
    await task


async def test_watch_of_one_signal_ends_at_its_terminal_update() -> None:
    hub = Hub(capacity=10)
    ledger = FakeLedger(hub, [upd(1), upd(2, signal_id="s2")])
    stream = watch(ledger, hub, "u1", signal_id="s1")  # type: ignore[arg-type]

    async def later() -> None:
        await asyncio.sleep(0)
        hub.publish(upd(3, signal_id="s2", status=c.EXECUTION_STATUS_FILLED))
        hub.publish(upd(4, status=c.EXECUTION_STATUS_CANCELLED))
        hub.publish(upd(5))

    task = asyncio.create_task(later())
    seen = await asyncio.wait_for(_all(stream), 5)
    await task
    assert seen == [1, 4]


async def test_watch_reports_where_to_resume_when_too_slow() -> None:
    hub = Hub(capacity=1)
    ledger = FakeLedger(hub, [upd(1)])
    stream = watch(ledger, hub, "u1")  # type: ignore[arg-type]
    assert (await anext(stream)).sequence == 1
    hub.publish(upd(2))
    hub.publish(upd(3))

    with pytest.raises(ServiceError) as info:
        await anext(stream)
    assert (info.value.code, info.value.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "WATCHER_TOO_SLOW",
    )
    assert info.value.metadata == {"last_sequence": "1"}


async def _all(stream: object) -> list[int]:
    return [u.sequence async for u in stream]  # type: ignore[attr-defined]
