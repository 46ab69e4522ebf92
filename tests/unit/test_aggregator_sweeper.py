"""The stale-order sweep: an order its router never routed is ended FAILED once it has been
PENDING long enough; a routed order, a young one, or any order while the aggregator has just
started, is left alone; and a router that routes the order in the same moment always wins over
the sweep, or loses cleanly (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf import timestamp_pb2
from nija.common.v1 import common_pb2 as c

from services.aggregator.ledger import Ledger
from services.aggregator.sweeper import ABANDONED_REASON, SweepConfig, Sweeper, abandoned_update
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
    return Sweeper(ledger, SweepConfig(stale_pending_s=60.0), clock=clock.seconds)


async def status_of(ledger: Ledger, signal_id: str) -> int:
    return (await ledger.get_order("u1", signal_id)).status


async def test_a_never_routed_order_is_ended_failed_once_stale_and_only_once(ledger: Ledger, clock: Clock) -> None:
    sweep = sweeper(ledger, clock)
    clock.now += 61  # the aggregator has been up long enough
    await ledger.create_order(signal("stuck"))
    await ledger.create_order(signal("routed"))
    await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "routed:routing:1", "routed", broker="kraken"))

    clock.now += 59
    assert await sweep.sweep_once() == 0  # young: its router may still be routing it
    assert await status_of(ledger, "stuck") == c.EXECUTION_STATUS_PENDING

    clock.now += 2
    assert await sweep.sweep_once() == 1
    order = await ledger.get_order("u1", "stuck")
    assert order.status == c.EXECUTION_STATUS_FAILED
    replay = await ledger.replay("u1", 0, signal_id="stuck")
    assert [u.status for u in replay] == [c.EXECUTION_STATUS_PENDING, c.EXECUTION_STATUS_FAILED]
    assert replay[-1].reason == ABANDONED_REASON
    assert await status_of(ledger, "routed") == c.EXECUTION_STATUS_ROUTING  # routed: never the sweep's
    assert await sweep.sweep_once() == 0

    # Its router, late, can no longer route it: nothing is sent for an order the sweep ended.
    with pytest.raises(ServiceError) as refused:
        await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "stuck:routing:1", "stuck", broker="kraken"))
    assert refused.value.reason == "ILLEGAL_TRANSITION"


async def test_a_just_started_aggregator_gives_routers_time_first(ledger: Ledger, clock: Clock) -> None:
    await ledger.create_order(signal("old"))
    clock.now += 3600
    sweep = sweeper(ledger, clock)  # started now: the order is an hour old
    assert await sweep.sweep_once() == 0
    clock.now += 61
    assert await sweep.sweep_once() == 1


async def test_a_router_that_routes_first_keeps_its_order(ledger: Ledger, clock: Clock) -> None:
    await ledger.create_order(signal("raced"))
    clock.now += 120
    [stale] = await ledger.stale_pending(clock.stamp())
    # The router's ROUTING lands between the sweep's query and its write.
    await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "raced:routing:1", "raced", broker="kraken"))
    assert await ledger.record_if_pending(abandoned_update(stale.signal, clock.stamp())) is None
    assert await status_of(ledger, "raced") == c.EXECUTION_STATUS_ROUTING
