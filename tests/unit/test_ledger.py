"""The ledger on a real SQLite file in a temp dir: sequencing, checks, dedupe, durability."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from nija.common.v1 import common_pb2 as c

from services.aggregator.backends import is_postgres
from services.aggregator.ledger import Ledger
from services.runtime.errors import ServiceError
from tests.ledger_db import rows


def signal(
    signal_id: str = "s1", user_id: str = "u1", size: str = "100", **kw: object
) -> c.TradeSignal:
    fields = dict(
        signal_id=signal_id,
        user_id=user_id,
        pair="BTC-USD",
        side=c.SIDE_BUY,
        size_usd=size,
        signal_type=c.SIGNAL_TYPE_ENTRY,
        strategy="apex_v71",
    )
    fields.update(kw)
    return c.TradeSignal(**fields)


def update(
    status: int, update_id: str, signal_id: str = "s1", user_id: str = "u1", **kw: object
) -> c.ExecutionUpdate:
    return c.ExecutionUpdate(
        user_id=user_id, signal_id=signal_id, status=status, update_id=update_id, **kw
    )


def fill(trade_id: str, quantity: str, price: str = "50000", fee: str = "0.5") -> c.Fill:
    return c.Fill(
        venue_trade_id=trade_id, price=price, quantity=quantity, fee=fee, fee_currency="USD"
    )


@pytest.fixture
async def ledger(database_url: str):
    """The same tests on SQLite and on PostgreSQL (a fresh schema each)."""
    published: list[c.ExecutionUpdate] = []
    store = Ledger(database_url, on_commit=published.append)
    store.published = published  # type: ignore[attr-defined]
    await store.open()
    yield store
    await store.close()


def snapshot(target: str) -> dict[str, list[tuple]]:
    """Every row of every table, read through a separate connection."""
    return {
        table: sorted(rows(target, f"SELECT * FROM {table}"))
        for table in ("orders", "updates", "fills", "user_sequences")
    }


async def to_executing(
    ledger: Ledger, signal_id: str = "s1", user_id: str = "u1", **kw: object
) -> None:
    await ledger.create_order(signal(signal_id, user_id))
    for status, name in (
        (c.EXECUTION_STATUS_ROUTING, "routing"),
        (c.EXECUTION_STATUS_QUEUED, "queued"),
    ):
        await ledger.record(
            update(status, f"{signal_id}:{name}", signal_id, user_id, broker="kraken")
        )
    await ledger.record(
        update(c.EXECUTION_STATUS_EXECUTING, f"{signal_id}:executing", signal_id, user_id, **kw)
    )


async def refused(coro: object, code: grpc.StatusCode, reason: str) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        await coro  # type: ignore[misc]
    assert (info.value.code, info.value.reason) == (code, reason), info.value
    return info.value


# -- create_order -----------------------------------------------------------------------------


async def test_create_order_claims_the_signal_and_records_pending(ledger: Ledger) -> None:
    result = await ledger.create_order(signal())

    assert result.created
    assert result.update is not None
    assert result.update.sequence == 1
    assert result.update.status == c.EXECUTION_STATUS_PENDING
    assert result.update.update_id == "s1:pending"
    assert (result.update.pair, result.update.side) == ("BTC-USD", c.SIDE_BUY)
    assert result.update.HasField("time")
    assert result.order.status == c.EXECUTION_STATUS_PENDING
    assert result.order.last_sequence == 1
    assert result.order.signal.size_usd == "100"
    assert ledger.published == [result.update]  # type: ignore[attr-defined]


async def test_create_order_again_with_the_same_trade_writes_nothing(ledger: Ledger) -> None:
    first = await ledger.create_order(signal())
    before = snapshot(ledger.path)

    # Fields that do not decide the order (strategy, metadata) may differ on a resubmission.
    again = await ledger.create_order(signal(strategy="other", metadata={"note": "retry"}))

    assert not again.created
    assert again.update is None
    assert again.order == first.order
    assert snapshot(ledger.path) == before
    assert len(ledger.published) == 1  # type: ignore[attr-defined]


async def test_a_retry_of_the_submission_that_created_the_order_is_told_it_created_it(ledger: Ledger) -> None:
    first = await ledger.create_order(signal(), "sub-1")
    retry = await ledger.create_order(signal(), "sub-1")  # the first answer was lost
    assert retry.created and retry.update == first.update and retry.order == first.order
    other = await ledger.create_order(signal(), "sub-2")  # another submission of the same signal
    assert not other.created and other.update is None
    assert not (await ledger.create_order(signal())).created  # no submission id: never the creator
    assert len(snapshot(ledger.path)["updates"]) == 1


async def test_a_ledger_from_before_submission_ids_gains_the_column(database_url: str) -> None:
    old = await Ledger(database_url).open()
    await old.create_order(signal("s0"))
    await old.close()
    if is_postgres(database_url):
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE orders DROP COLUMN submission_id")
    else:
        import sqlite3

        with sqlite3.connect(database_url) as conn:
            conn.execute("ALTER TABLE orders DROP COLUMN submission_id")
    reopened = await Ledger(database_url).open()
    try:
        assert (await reopened.create_order(signal("s1"), "sub-1")).created
        assert (await reopened.create_order(signal("s1"), "sub-1")).created
        assert (await reopened.get_order("u1", "s0")).signal_id == "s0"
    finally:
        await reopened.close()


async def test_create_order_with_a_reused_signal_id_is_already_exists(ledger: Ledger) -> None:
    await ledger.create_order(signal())
    before = snapshot(ledger.path)

    await refused(
        ledger.create_order(signal(size="200")), grpc.StatusCode.ALREADY_EXISTS, "SIGNAL_ID_REUSED"
    )
    assert snapshot(ledger.path) == before


async def test_create_order_with_a_malformed_signal_is_invalid(ledger: Ledger) -> None:
    await refused(
        ledger.create_order(signal(pair="btcusd")), grpc.StatusCode.INVALID_ARGUMENT, "BAD_PAIR"
    )
    await refused(
        ledger.create_order(signal(size="1e3")), grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIZE_USD"
    )
    assert snapshot(ledger.path)["orders"] == []


# -- sequence ---------------------------------------------------------------------------------


async def test_sequences_are_gap_free_per_user_and_independent_between_users(
    ledger: Ledger,
) -> None:
    a1 = await ledger.create_order(signal("a1", "alice"))
    b1 = await ledger.create_order(signal("b1", "bob"))
    a2 = await ledger.create_order(signal("a2", "alice"))
    routed = await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "a1:routing", "a1", "alice"))
    b2 = await ledger.create_order(signal("b2", "bob"))

    assert [a1.update.sequence, a2.update.sequence, routed.update.sequence] == [1, 2, 3]
    assert [b1.update.sequence, b2.update.sequence] == [1, 2]


async def test_concurrent_records_get_gap_free_sequences(ledger: Ledger) -> None:
    users = [f"u{n}" for n in range(5)]
    signals = [f"s{n}" for n in range(8)]

    async def lifecycle(user_id: str, signal_id: str) -> None:
        await ledger.create_order(signal(signal_id, user_id))
        await ledger.record(
            update(c.EXECUTION_STATUS_ROUTING, f"{signal_id}:r", signal_id, user_id)
        )
        await ledger.record(
            update(c.EXECUTION_STATUS_QUEUED, f"{signal_id}:q", signal_id, user_id, broker="kraken")
        )
        await ledger.record(
            update(c.EXECUTION_STATUS_CANCELLED, f"{signal_id}:c", signal_id, user_id)
        )

    await asyncio.gather(*(lifecycle(u, s) for u in users for s in signals))

    for user_id in users:
        replayed = await ledger.replay(user_id, 0, limit=1000)
        assert [u.sequence for u in replayed] == list(range(1, 4 * len(signals) + 1))
        assert {u.user_id for u in replayed} == {user_id}
    # Live fan-out saw every user's updates in commit (= sequence) order.
    for user_id in users:
        live = [u.sequence for u in ledger.published if u.user_id == user_id]  # type: ignore[attr-defined]
        assert live == list(range(1, 4 * len(signals) + 1))


async def test_sequence_survives_a_reopen(ledger: Ledger, tmp_path: Path) -> None:
    await ledger.create_order(signal("s1"))
    await ledger.close()

    reopened = await Ledger(ledger.path).open()
    try:
        result = await reopened.create_order(signal("s2"))
        assert result.update is not None and result.update.sequence == 2
    finally:
        await reopened.close()


# -- record: checks ---------------------------------------------------------------------------


async def test_record_assigns_the_next_sequence_and_updates_the_order(ledger: Ledger) -> None:
    await ledger.create_order(signal())
    result = await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "s1:routing", broker="kraken"))

    assert not result.duplicate
    assert result.update.sequence == 2
    assert result.update.HasField("time")
    assert (result.update.pair, result.update.side) == ("BTC-USD", c.SIDE_BUY)
    order = await ledger.get_order("u1", "s1")
    assert (order.status, order.broker, order.last_sequence) == (
        c.EXECUTION_STATUS_ROUTING,
        "kraken",
        2,
    )


async def test_record_keeps_a_time_the_writer_chose(ledger: Ledger) -> None:
    await ledger.create_order(signal())
    sent = update(c.EXECUTION_STATUS_ROUTING, "s1:routing")
    sent.time.FromSeconds(1_700_000_000)

    result = await ledger.record(sent)

    assert result.update.time.seconds == 1_700_000_000


async def test_an_illegal_transition_is_refused_and_writes_nothing(ledger: Ledger) -> None:
    await ledger.create_order(signal())
    before = snapshot(ledger.path)

    err = await refused(
        ledger.record(update(c.EXECUTION_STATUS_FILLED, "s1:filled")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ILLEGAL_TRANSITION",
    )

    assert err.metadata == {"current": "pending", "requested": "filled"}
    assert snapshot(ledger.path) == before
    # The refused update did not take a sequence number.
    nxt = await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "s1:routing"))
    assert nxt.update.sequence == 2


async def test_no_update_after_a_terminal_one(ledger: Ledger) -> None:
    await ledger.create_order(signal())
    await ledger.record(update(c.EXECUTION_STATUS_REJECTED, "s1:rejected", reason="RISK_LIMIT"))

    await refused(
        ledger.record(update(c.EXECUTION_STATUS_ROUTING, "s1:routing")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ILLEGAL_TRANSITION",
    )


async def test_an_update_for_an_unknown_order_is_not_found(ledger: Ledger) -> None:
    await refused(
        ledger.record(update(c.EXECUTION_STATUS_ROUTING, "x:routing", signal_id="x")),
        grpc.StatusCode.NOT_FOUND,
        "ORDER_NOT_FOUND",
    )


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        (update(c.EXECUTION_STATUS_ROUTING, "r", user_id=""), "BAD_USER_ID"),
        (update(c.EXECUTION_STATUS_ROUTING, "r", signal_id=""), "BAD_SIGNAL_ID"),
        (update(c.EXECUTION_STATUS_ROUTING, ""), "BAD_UPDATE_ID"),
        (update(c.EXECUTION_STATUS_UNSPECIFIED, "r"), "BAD_STATUS"),
        (update(c.EXECUTION_STATUS_PARTIAL_FILL, "r", fills=[fill("t1", "1e-3")]), "BAD_FILL"),
        (
            update(c.EXECUTION_STATUS_PARTIAL_FILL, "r", fills=[fill("t1", "0.1", price="NaN")]),
            "BAD_FILL",
        ),
        (update(c.EXECUTION_STATUS_PARTIAL_FILL, "r", fills=[fill("", "0.1")]), "BAD_FILL"),
        (
            update(c.EXECUTION_STATUS_PARTIAL_FILL, "r", filled_quantity="abc"),
            "BAD_FILLED_QUANTITY",
        ),
        (update(c.EXECUTION_STATUS_PARTIAL_FILL, "r", average_price="-1"), "BAD_AVERAGE_PRICE"),
        (update(c.EXECUTION_STATUS_EXECUTING, "r", order_quantity="1,5"), "BAD_ORDER_QUANTITY"),
    ],
)
async def test_a_malformed_update_is_invalid(
    ledger: Ledger, sent: c.ExecutionUpdate, reason: str
) -> None:
    await ledger.create_order(signal())
    before = snapshot(ledger.path)

    await refused(ledger.record(sent), grpc.StatusCode.INVALID_ARGUMENT, reason)

    assert snapshot(ledger.path) == before


# -- record: dedupe ---------------------------------------------------------------------------


async def test_the_same_update_id_again_returns_the_stored_update(ledger: Ledger) -> None:
    await ledger.create_order(signal())
    first = await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "s1:routing", broker="kraken"))
    before = snapshot(ledger.path)

    again = await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "s1:routing", broker="kraken"))

    assert again.duplicate
    assert again.update == first.update
    assert snapshot(ledger.path) == before


async def test_a_retried_terminal_update_is_a_duplicate_not_an_illegal_move(ledger: Ledger) -> None:
    await to_executing(ledger, order_quantity="1")
    filled = update(c.EXECUTION_STATUS_FILLED, "s1:filled", fills=[fill("t1", "1")])
    first = await ledger.record(filled)

    again = await ledger.record(filled)

    assert again.duplicate and again.update == first.update


async def test_an_update_id_reused_for_another_update_is_already_exists(ledger: Ledger) -> None:
    await ledger.create_order(signal())
    await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "s1:step"))

    await refused(
        ledger.record(update(c.EXECUTION_STATUS_QUEUED, "s1:step")),
        grpc.StatusCode.ALREADY_EXISTS,
        "UPDATE_ID_REUSED",
    )


async def test_update_ids_are_scoped_to_their_user(ledger: Ledger) -> None:
    # Writers derive update ids from signal ids, which are unique per user only.
    a = await ledger.create_order(signal("s1", "alice"))
    b = await ledger.create_order(signal("s1", "bob"))

    assert a.created and b.created
    assert a.update.update_id == b.update.update_id == "s1:pending"


async def test_a_fill_already_recorded_is_dropped_from_a_later_update(ledger: Ledger) -> None:
    await to_executing(ledger, order_quantity="1")
    await ledger.record(
        update(c.EXECUTION_STATUS_PARTIAL_FILL, "s1:p1", fills=[fill("t1", "0.25")])
    )

    result = await ledger.record(
        update(
            c.EXECUTION_STATUS_PARTIAL_FILL,
            "s1:p2",
            fills=[
                fill("t1", "0.25"),
                fill("t2", "0.25", price="50100"),
                fill("t2", "0.25", price="50100"),
            ],
        )
    )

    assert [f.venue_trade_id for f in result.update.fills] == ["t2"]
    assert result.update.filled_quantity == "0.5"
    assert result.update.filled_notional == "25025"
    assert result.update.fees_total == "1"
    assert result.update.average_price == "50050"
    assert len(snapshot(ledger.path)["fills"]) == 2
    order = await ledger.get_order("u1", "s1")
    assert (order.filled_quantity, order.average_price, order.order_quantity) == (
        "0.5",
        "50050",
        "1",
    )


async def test_fills_are_deduplicated_per_broker(ledger: Ledger) -> None:
    await to_executing(ledger, order_quantity="1")
    await ledger.record(
        update(c.EXECUTION_STATUS_PARTIAL_FILL, "s1:p1", fills=[fill("t1", "0.25")])
    )
    # The same trade id on another broker is another trade.
    result = await ledger.record(
        update(
            c.EXECUTION_STATUS_PARTIAL_FILL, "s1:p2", broker="binance", fills=[fill("t1", "0.25")]
        )
    )

    assert [f.venue_trade_id for f in result.update.fills] == ["t1"]


async def test_writer_figures_win_over_derived_ones(ledger: Ledger) -> None:
    await to_executing(ledger, order_quantity="1")
    result = await ledger.record(
        update(
            c.EXECUTION_STATUS_PARTIAL_FILL,
            "s1:p1",
            fills=[fill("t1", "0.25")],
            filled_quantity="0.250",
            fees_total="0.45",
        )
    )

    assert (result.update.filled_quantity, result.update.fees_total) == ("0.25", "0.45")
    assert result.update.filled_notional == "12500"  # derived: the writer left it out


async def test_an_update_without_fills_carries_the_figures_over(ledger: Ledger) -> None:
    await to_executing(ledger, order_quantity="1")
    await ledger.record(
        update(c.EXECUTION_STATUS_PARTIAL_FILL, "s1:p1", fills=[fill("t1", "0.25")])
    )

    cancelled = await ledger.record(update(c.EXECUTION_STATUS_CANCELLED, "s1:cancelled"))

    assert (cancelled.update.filled_quantity, cancelled.update.average_price) == ("0.25", "50000")
    assert cancelled.update.order_quantity == "1"


async def test_an_overfill_is_refused_and_writes_nothing(ledger: Ledger) -> None:
    await to_executing(ledger, order_quantity="1")
    await ledger.record(update(c.EXECUTION_STATUS_PARTIAL_FILL, "s1:p1", fills=[fill("t1", "0.6")]))
    before = snapshot(ledger.path)

    err = await refused(
        ledger.record(update(c.EXECUTION_STATUS_FILLED, "s1:filled", fills=[fill("t2", "0.6")])),
        grpc.StatusCode.FAILED_PRECONDITION,
        "OVERFILL",
    )

    assert err.metadata == {"filled_quantity": "1.2", "order_quantity": "1"}
    assert snapshot(ledger.path) == before


async def test_fills_need_a_broker(ledger: Ledger) -> None:
    await ledger.create_order(signal())
    await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "s1:routing"))
    await ledger.record(update(c.EXECUTION_STATUS_QUEUED, "s1:queued"))
    await ledger.record(update(c.EXECUTION_STATUS_EXECUTING, "s1:executing"))

    await refused(
        ledger.record(update(c.EXECUTION_STATUS_PARTIAL_FILL, "s1:p1", fills=[fill("t1", "0.1")])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "BAD_BROKER",
    )


# -- queries and durability -------------------------------------------------------------------


async def test_replay_filters_by_signal_and_pages(ledger: Ledger) -> None:
    for n in range(3):
        await ledger.create_order(signal(f"s{n}"))
    await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "s0:routing", signal_id="s0"))

    assert [u.sequence for u in await ledger.replay("u1", 0, limit=2)] == [1, 2]
    assert [u.sequence for u in await ledger.replay("u1", 2, limit=2)] == [3, 4]
    assert [u.sequence for u in await ledger.replay("u1", 0, "s0")] == [1, 4]
    assert await ledger.replay("nobody", 0) == []


async def test_get_order_of_an_unknown_signal_is_not_found(ledger: Ledger) -> None:
    await refused(ledger.get_order("u1", "nope"), grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    await refused(ledger.get_order("", "nope"), grpc.StatusCode.INVALID_ARGUMENT, "BAD_USER_ID")


async def test_a_recorded_update_is_on_disk_when_record_returns(ledger: Ledger) -> None:
    await ledger.create_order(signal())
    result = await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "s1:routing"))

    (row,) = rows(
        ledger.path, "SELECT update_id, status, body FROM updates WHERE user_id = ? AND sequence = ?",
        ("u1", result.update.sequence),
    )
    assert row[:2] == ("s1:routing", "routing")
    assert c.ExecutionUpdate.FromString(bytes(row[2])) == result.update
    if not is_postgres(ledger.path):
        assert rows(ledger.path, "PRAGMA journal_mode")[0][0] == "wal"


async def test_a_closed_ledger_refuses_work(ledger: Ledger) -> None:
    await ledger.close()
    await refused(ledger.create_order(signal()), grpc.StatusCode.UNAVAILABLE, "LEDGER_CLOSED")


async def test_a_write_failing_after_it_changed_rows_leaves_no_trace_and_its_batch_lands(
    ledger: Ledger, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: SQLite runs a batch without a savepoint per write; a write that fails after
    writing (a bug) has the batch run again with savepoints, so only its own rows go."""
    await ledger.create_order(signal("s1"))
    before = snapshot(database_url)
    runs: list[bool] = []
    apply = Ledger._apply

    def spy(db, batch, savepoints):  # type: ignore[no-untyped-def]
        runs.append(savepoints)
        return apply(db, batch, savepoints)

    monkeypatch.setattr(Ledger, "_apply", staticmethod(spy))

    def half_written(db, user_id: str) -> tuple[None, list[c.ExecutionUpdate]]:  # type: ignore[no-untyped-def]
        db.execute("UPDATE user_sequences SET last_sequence = 99 WHERE user_id = ?", (user_id,))
        raise RuntimeError("a bug after a write")

    good = [ledger.enqueue_record(update(c.EXECUTION_STATUS_ROUTING, "s1:routing", broker="kraken"))]
    bad = ledger._submit(half_written, "u1")
    good.append(ledger.enqueue_record(update(c.EXECUTION_STATUS_QUEUED, "s1:queued")))
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(results[2], RuntimeError)
    assert [r.update.sequence for r in results[:2]] == [2, 3]
    after = snapshot(database_url)
    assert after["user_sequences"] == [("u1", 3)]
    assert len(after["updates"]) == len(before["updates"]) + 2
    assert [u.update_id for u in ledger.published] == ["s1:pending", "s1:routing", "s1:queued"]
    # SQLite: tried without savepoints, run again with them; PostgreSQL: with them from the start.
    assert (False, True) in zip(runs, runs[1:]) if not is_postgres(database_url) else all(runs)
