"""Reserve against many open reservations of one user (issue 10): the limits read the sums the
store keeps (risk.OpenTotals), and those stay exactly the sums of the rows through reserves,
fills, releases, final states, orphans expiring, and writers that do not keep them."""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D

import pytest

from services.domain.signal import Side
from services.permission.checks import Denial
from services.permission.db import open_database
from services.permission.positions import ExecutionEvent, FillEvent
from services.permission.risk import OpenTotals
from services.permission.store import UserStore, _open_totals
from tests.unit.test_risk import FAST, BUY, SELL, Clock, make_user, request

#: Enough open reservations that summing them per call would show; few enough for a unit test.
OPEN = 300


@pytest.fixture
async def store(database_url: str):
    store = UserStore(database_url, clock=Clock())
    await store.open()
    yield store
    await store.close()


async def kept_totals(store: UserStore, user_id: str = "erin") -> OpenTotals:
    """The sums as the store keeps them, checked against the rows they stand for."""
    totals, kept = await store._tx(_open_totals, user_id, write=False)
    assert kept, "the sums were not kept by the last writer"
    assert totals == OpenTotals.of(await store.open_reservations(user_id))
    return totals


def fill(reservation: str, usd: str, key: str, terminal: bool = False, side: Side = BUY) -> ExecutionEvent:
    # A price of 1 USD: the fill's quantity is its notional.
    return ExecutionEvent("erin", reservation, "BTC-USD", side, (FillEvent(key, D(1), D(usd), D(0)),), terminal)


async def test_the_daily_notional_limit_is_exact_at_the_boundary_with_hundreds_open(store: UserStore):
    await store.upsert(make_user(limits=dataclasses.replace(FAST, max_daily_notional_usd=D(OPEN))))
    for i in range(OPEN):
        assert (await store.reserve(request(f"s{i}", "1"))).decision.allowed, i
    over = await store.reserve(request("over", "0.01"))
    assert over.decision.code is Denial.DAILY_NOTIONAL_LIMIT
    assert "open reservations 300 USD" in over.decision.reason
    assert (await kept_totals(store)).count == OPEN

    # Fills move notional from "reserved" to "traded": the total, and the limit, do not move.
    assert sum(a.new_fills for a in await store.apply_executions(
        [fill(f"s{i}", "0.5", f"f{i}") for i in range(10)]
    )) == 10
    assert (await store.reserve(request("over", "0.01"))).decision.code is Denial.DAILY_NOTIONAL_LIMIT
    assert (await kept_totals(store)).remaining_usd() == D(OPEN - 5)

    # A final state gives back the unfilled rest (10 x 0.5), a release the whole of one: 6 USD.
    await store.apply_executions([fill(f"s{i}", "0.5", f"f{i}", terminal=True) for i in range(10)])
    assert await store.release("erin", "s10")
    assert (await store.reserve(request("six", "6"))).decision.allowed
    assert (await store.reserve(request("over", "0.01"))).decision.code is Denial.DAILY_NOTIONAL_LIMIT
    totals = await kept_totals(store)
    assert (totals.count, totals.remaining_usd()) == (OPEN - 11 + 1, D(OPEN - 11 + 6))


async def test_the_position_limit_sums_each_pair_and_side_apart(store: UserStore):
    limits = dataclasses.replace(FAST, max_position_usd=D(100))
    await store.upsert(make_user(limits=limits))
    for i in range(100):
        assert (await store.reserve(request(f"b{i}", "1"))).decision.allowed
        assert (await store.reserve(request(f"e{i}", "1", pair="ETH-USD"))).decision.allowed
    assert (await store.reserve(request("b-over", "0.01"))).decision.code is Denial.POSITION_LIMIT
    # Open sells are the other worst case (a short of their sum), counted apart from the buys.
    for i in range(100):
        assert (await store.reserve(request(f"x{i}", "1", SELL))).decision.allowed, i
    assert (await store.reserve(request("x-over", "0.01", SELL))).decision.code is Denial.POSITION_LIMIT
    totals = await kept_totals(store)
    assert totals.remaining_usd("BTC-USD", BUY) == 100 and totals.remaining_usd("BTC-USD", SELL) == 100
    assert totals.remaining_usd("ETH-USD") == 100 and totals.count == 300


async def test_orphans_expire_out_of_the_sums(store: UserStore):
    clock = store._clock
    assert isinstance(clock, Clock)
    await store.upsert(make_user(limits=dataclasses.replace(FAST, max_daily_notional_usd=D(OPEN))))
    for i in range(OPEN):
        assert (await store.reserve(request(f"s{i}", "1"))).decision.allowed
    # The ledger reported one of them: it stays; every other one is an orphan after 60 s.
    await store.apply_executions([ExecutionEvent("erin", "s7", "BTC-USD", BUY, ())])
    clock.advance(61)
    assert (await store.reserve(request("after", str(OPEN - 1)))).decision.allowed
    assert (await store.reserve(request("over", "0.01"))).decision.code is Denial.DAILY_NOTIONAL_LIMIT
    assert [r.signal_id for r in await store.open_reservations("erin")] == ["s7", "after"]
    assert (await kept_totals(store)).count == 2


async def test_a_writer_that_does_not_keep_the_sums_is_noticed(database_url: str, store: UserStore):
    """The previous release during a rolling deploy, or an operator's SQL, changes reservations
    without the sums: the next reserve sums the rows again instead of trusting stale sums."""
    await store.upsert(make_user(limits=dataclasses.replace(FAST, max_daily_notional_usd=D(100))))
    for i in range(50):
        assert (await store.reserve(request(f"s{i}", "2"))).decision.allowed
    assert (await store.reserve(request("over", "0.01"))).decision.code is Denial.DAILY_NOTIONAL_LIMIT
    other = open_database(database_url)
    try:
        with other.transaction():
            other.execute("UPDATE reservations SET status = 'released' WHERE user_id = 'erin' AND signal_id = 's0'")
            other.execute("UPDATE reservations SET filled_usd = '1' WHERE user_id = 'erin' AND signal_id = 's1'")
        assert (await store.reserve(request("freed", "3"))).decision.allowed  # 2 released + 1 filled (untraded)
        assert (await store.reserve(request("over", "0.01"))).decision.code is Denial.DAILY_NOTIONAL_LIMIT
        with other.transaction():
            other.execute(
                "INSERT INTO reservations (user_id, signal_id, pair, side, reserved_usd, filled_usd, status, "
                "day, created_at) VALUES ('erin', 'old', 'BTC-USD', 'buy', '5', '0', 'open', '2024-05-01', "
                "'2024-05-01T12:00:00+00:00')"
            )
        await store.release("erin", "s2")  # frees 2, but the row written above holds 5
        assert (await store.reserve(request("over", "0.01"))).decision.code is Denial.DAILY_NOTIONAL_LIMIT
    finally:
        other.close()
    # 100 reserved, -2 released, -1 filled, +3 freed, +5 written aside, -2 released.
    assert (await kept_totals(store)).remaining_usd() == 103
