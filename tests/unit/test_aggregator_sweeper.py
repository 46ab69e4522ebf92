"""The stale-order sweep: an order left PENDING or ROUTING with no update long enough (its router
stopped before an executor took it) is ended FAILED; one an executor took, a young one, or any
order while the aggregator has just started, is left alone; and a writer that carries the order
on in the same moment always wins over the sweep, or loses cleanly (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf import timestamp_pb2
from nija.common.v1 import common_pb2 as c

from services.aggregator.ledger import Ledger
from services.aggregator.sweeper import NOT_ROUTED, NOT_TAKEN, SweepConfig, Sweeper, abandoned_update
from services.domain.states import Status
from services.runtime.errors import ServiceError
from tests.unit.test_ledger import signal, update

START = 1_780_000_000.0


class Clock:
    """One clock for the ledger (Timestamps) and the sweeper (seconds)."""

    def __init__(self) -> None:
        self.now = START

    def seconds(self) -> float:
        return self.now

    def stamp(self) -> timestamp_pb2.Timestamp:
        out = timestamp_pb2.Timestamp()
        out.FromNanoseconds(int(self.now * 1e9))
        return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def ledger(database_url: str, clock: Clock) -> AsyncIterator[Ledger]:
    store = Ledger(database_url, clock=clock.stamp)
    await store.open()
    yield store
    await store.close()


def sweeper(ledger: Ledger, clock: Clock) -> Sweeper:
    return Sweeper(ledger, SweepConfig(stale_s=60.0), clock=clock.seconds)


async def status_of(ledger: Ledger, signal_id: str) -> int:
    return (await ledger.get_order("u1", signal_id)).status


async def test_orders_nobody_carried_on_are_ended_failed_once_stale_and_only_once(ledger: Ledger, clock: Clock) -> None:
    sweep = sweeper(ledger, clock)
    clock.now += 61  # the aggregator has been up long enough
    await ledger.create_order(signal("stuck"))
    await ledger.create_order(signal("dropped"))
    await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "dropped:routing:1", "dropped", broker="kraken"))
    await ledger.create_order(signal("taken"))
    await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "taken:routing:1", "taken", broker="kraken"))
    await ledger.record(update(c.EXECUTION_STATUS_QUEUED, "taken:queued", "taken", broker="kraken"))

    clock.now += 59
    assert await sweep.sweep_once() == 0  # young: their router may still be carrying them on
    assert await status_of(ledger, "stuck") == c.EXECUTION_STATUS_PENDING

    clock.now += 2
    assert await sweep.sweep_once() == 2
    for signal_id, reason, broker in (("stuck", NOT_ROUTED, ""), ("dropped", NOT_TAKEN.format(broker="kraken"), "kraken")):
        replay = await ledger.replay("u1", 0, signal_id=signal_id)
        assert replay[-1].status == c.EXECUTION_STATUS_FAILED and replay[-1].reason == reason
        assert replay[-1].broker == broker
        assert len(replay) == (2 if signal_id == "stuck" else 3)
    assert await status_of(ledger, "taken") == c.EXECUTION_STATUS_QUEUED  # an executor has it: never the sweep's
    assert await sweep.sweep_once() == 0

    # Late writers can no longer carry them on: nothing is sent for an order the sweep ended.
    for late in (update(c.EXECUTION_STATUS_ROUTING, "stuck:routing:1", "stuck", broker="kraken"),
                 update(c.EXECUTION_STATUS_QUEUED, "dropped:queued", "dropped", broker="kraken")):
        with pytest.raises(ServiceError) as refused:
            await ledger.record(late)
        assert refused.value.reason == "ILLEGAL_TRANSITION"


async def test_a_just_started_aggregator_gives_routers_time_first(ledger: Ledger, clock: Clock) -> None:
    await ledger.create_order(signal("old"))
    clock.now += 3600
    sweep = sweeper(ledger, clock)  # started now: the order is an hour old
    assert await sweep.sweep_once() == 0
    clock.now += 61
    assert await sweep.sweep_once() == 1


async def test_a_writer_that_carries_the_order_on_first_keeps_it(ledger: Ledger, clock: Clock) -> None:
    await ledger.create_order(signal("raced"))
    clock.now += 120
    [stale] = await ledger.stale(Status.PENDING, clock.stamp())
    # The router's ROUTING lands between the sweep's query and its write.
    await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "raced:routing:1", "raced", broker="kraken"))
    assert await ledger.record_if_unchanged(abandoned_update(stale, clock.stamp()), stale.last_sequence) is None
    clock.now += 120
    [stale] = await ledger.stale(Status.ROUTING, clock.stamp())
    # And the executor's QUEUED between the next sweep's query and its write.
    await ledger.record(update(c.EXECUTION_STATUS_QUEUED, "raced:queued", "raced", broker="kraken"))
    assert await ledger.record_if_unchanged(abandoned_update(stale, clock.stamp()), stale.last_sequence) is None
    assert await status_of(ledger, "raced") == c.EXECUTION_STATUS_QUEUED
