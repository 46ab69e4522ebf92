"""The ledger: orders, their updates and fills, and each user's update sequence. Durable.

All database work runs on one dedicated thread (a single-worker executor): the event loop never
waits on the disk, and since transactions run there one at a time, the read-check-write of a
request and the sequence number it takes are atomic without further locking. A request is
answered only after its transaction committed (WAL, synchronous=FULL); a refused request rolls
back and writes nothing.

Committed updates are handed to `on_commit` on the event loop in commit order: they are scheduled
from the database thread right after COMMIT, before the caller's answer, so live watchers see each
user's updates in sequence order and no later than the writer does.

The SQL sticks to what PostgreSQL also understands (apart from the PRAGMAs and the `?`
placeholders) so a second backend can share it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from nija.aggregator.v1 import aggregator_pb2
from nija.common.v1 import common_pb2

from services.aggregator.rules import (
    Change,
    FillEntry,
    Totals,
    check_overfill,
    parse_update,
    split_fills,
    wire_decimal,
)
from services.domain.money import fmt, quantize_derived
from services.domain.signal import PARENT_KEY, Side, Signal
from services.domain.states import TERMINAL, IllegalTransition, Status, check_transition
from services.runtime.errors import ServiceError, invalid, not_found, precondition
from services.runtime.wire import (
    SIDE_TO_PB,
    STATUS_FROM_PB,
    STATUS_TO_PB,
    now_pb,
    signal_from_pb,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA: tuple[str, ...] = (
    # One row per (user, signal): the order as it stands after its last update.
    """
    CREATE TABLE IF NOT EXISTS orders (
        user_id         TEXT NOT NULL,
        signal_id       TEXT NOT NULL,
        signal          BLOB NOT NULL,
        pair            TEXT NOT NULL,
        side            TEXT NOT NULL,
        status          TEXT NOT NULL,
        broker          TEXT NOT NULL,
        order_quantity  TEXT NOT NULL,
        filled_quantity TEXT NOT NULL,
        filled_notional TEXT NOT NULL,
        fees_total      TEXT NOT NULL,
        average_price   TEXT NOT NULL,
        last_sequence   BIGINT NOT NULL,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        PRIMARY KEY (user_id, signal_id)
    )
    """,
    # Every update as persisted (`body` is the serialized ExecutionUpdate, sequence included).
    # update_id is unique per user: writers derive it from the signal_id, which is per user.
    """
    CREATE TABLE IF NOT EXISTS updates (
        user_id     TEXT NOT NULL,
        sequence    BIGINT NOT NULL,
        update_id   TEXT NOT NULL,
        signal_id   TEXT NOT NULL,
        status      TEXT NOT NULL,
        broker      TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        body        BLOB NOT NULL,
        PRIMARY KEY (user_id, sequence),
        UNIQUE (user_id, update_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS updates_by_signal ON updates (user_id, signal_id, sequence)",
    """
    CREATE TABLE IF NOT EXISTS fills (
        broker         TEXT NOT NULL,
        venue_trade_id TEXT NOT NULL,
        user_id        TEXT NOT NULL,
        signal_id      TEXT NOT NULL,
        sequence       BIGINT NOT NULL,
        price          TEXT NOT NULL,
        quantity       TEXT NOT NULL,
        fee            TEXT NOT NULL,
        fee_currency   TEXT NOT NULL,
        PRIMARY KEY (broker, venue_trade_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS fills_by_order ON fills (user_id, signal_id)",
    """
    CREATE TABLE IF NOT EXISTS user_sequences (
        user_id       TEXT NOT NULL PRIMARY KEY,
        last_sequence BIGINT NOT NULL
    )
    """,
    # How far a consumer of the updates (the permission service's positions) has got, by the
    # updates' insertion order (rowid), persisted after each batch it acknowledged.
    """
    CREATE TABLE IF NOT EXISTS feed_cursors (
        name     TEXT NOT NULL PRIMARY KEY,
        position BIGINT NOT NULL
    )
    """,
)

#: Updates the permission service must see: the first (the order exists: its reservation is no
#: orphan), those with fills, and final states.
_FEED_QUERY = f"""
SELECT u.rowid AS position, u.body AS body FROM updates u
WHERE u.rowid > ? AND (
    u.status IN ('pending', {", ".join(repr(s.value) for s in sorted(TERMINAL, key=lambda s: s.value))})
    OR EXISTS (SELECT 1 FROM fills f WHERE f.user_id = u.user_id AND f.sequence = u.sequence)
)
ORDER BY u.rowid LIMIT ?
"""


@dataclasses.dataclass(frozen=True)
class Created:
    created: bool
    order: aggregator_pb2.Order
    #: The PENDING update, when the order was created by this call.
    update: common_pb2.ExecutionUpdate | None


@dataclasses.dataclass(frozen=True)
class Recorded:
    #: The update as persisted, with its sequence.
    update: common_pb2.ExecutionUpdate
    #: True when this update_id had been recorded before (nothing was written).
    duplicate: bool


OnCommit = Callable[[common_pb2.ExecutionUpdate], None]
Clock = Callable[[], timestamp_pb2.Timestamp]


def pending_update_id(signal_id: str) -> str:
    return f"{signal_id}:pending"


def _text(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToJsonString()


def _timestamp(text: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(text)
    return ts


def _is_unset(ts: timestamp_pb2.Timestamp) -> bool:
    return ts.seconds == 0 and ts.nanos == 0


def _order_pb(row: sqlite3.Row) -> aggregator_pb2.Order:
    return aggregator_pb2.Order(
        user_id=row["user_id"],
        signal_id=row["signal_id"],
        signal=common_pb2.TradeSignal.FromString(row["signal"]),
        status=STATUS_TO_PB[Status(row["status"])],
        broker=row["broker"],
        order_quantity=row["order_quantity"],
        filled_quantity=row["filled_quantity"],
        filled_notional=row["filled_notional"],
        fees_total=row["fees_total"],
        average_price=row["average_price"],
        last_sequence=row["last_sequence"],
        created_at=_timestamp(row["created_at"]),
        updated_at=_timestamp(row["updated_at"]),
    )


def _next_sequence(db: sqlite3.Connection, user_id: str) -> int:
    # Runs inside the write transaction, so the number is taken only if the write commits.
    row = db.execute(
        "SELECT last_sequence FROM user_sequences WHERE user_id = ?", (user_id,)
    ).fetchone()
    if row is None:
        db.execute("INSERT INTO user_sequences (user_id, last_sequence) VALUES (?, 1)", (user_id,))
        return 1
    sequence = int(row[0]) + 1
    db.execute("UPDATE user_sequences SET last_sequence = ? WHERE user_id = ?", (sequence, user_id))
    return sequence


def _insert_update(
    db: sqlite3.Connection, update: common_pb2.ExecutionUpdate, recorded_at: str
) -> None:
    db.execute(
        "INSERT INTO updates (user_id, sequence, update_id, signal_id, status, broker, recorded_at, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            update.user_id,
            update.sequence,
            update.update_id,
            update.signal_id,
            _status_text(update.status),
            update.broker,
            recorded_at,
            update.SerializeToString(),
        ),
    )


def _status_text(pb_status: int) -> str:
    return STATUS_FROM_PB[pb_status].value


def _recorded_totals(db: sqlite3.Connection, user_id: str, signal_id: str) -> Totals:
    rows = db.execute(
        "SELECT price, quantity, fee FROM fills WHERE user_id = ? AND signal_id = ?",
        (user_id, signal_id),
    ).fetchall()
    entries = [
        FillEntry(i, "", Decimal(r["price"]), Decimal(r["quantity"]), Decimal(r["fee"]))
        for i, r in enumerate(rows)
    ]
    return Totals().plus(entries)


def _already_recorded(db: sqlite3.Connection, broker: str, fills: Sequence[FillEntry]) -> set[str]:
    ids = sorted({f.venue_trade_id for f in fills})
    if not ids:
        return set()
    marks = ", ".join("?" for _ in ids)
    rows = db.execute(
        f"SELECT venue_trade_id FROM fills WHERE broker = ? AND venue_trade_id IN ({marks})",
        (broker, *ids),
    ).fetchall()
    return {r[0] for r in rows}


def _complete_figures(
    persisted: common_pb2.ExecutionUpdate,
    change: Change,
    order: sqlite3.Row,
    totals: Totals,
    new_fills: bool,
) -> None:
    """Set every cumulative figure, so each stored update tells the whole story on its own.

    The writer's figures win; a missing one comes from the ledger's own fills when this update
    brought fills, else it carries over from the order as it stood.
    """
    average = totals.average_price
    derived = {
        "filled_quantity": wire_decimal(totals.quantity),
        "filled_notional": wire_decimal(totals.notional),
        "fees_total": wire_decimal(totals.fees),
        "average_price": fmt(quantize_derived(average)) if average is not None else "",
    }
    for field, value in derived.items():
        given: Decimal | None = getattr(change, field)
        if given is not None:
            setattr(persisted, field, wire_decimal(given))
        else:
            setattr(persisted, field, value if new_fills else order[field])


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Ledger:
    """The aggregator's store. `await open()` before use, `await close()` at the end."""

    def __init__(
        self, path: str, *, on_commit: OnCommit | None = None, clock: Clock = now_pb
    ) -> None:
        self.path = path
        self._on_commit = on_commit
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db: sqlite3.Connection | None = None  # touched only on the executor's thread
        # Writes waiting for the next group commit: (fn, args, future).
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        self._pending_lock = threading.Lock()
        self._flush_scheduled = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> Ledger:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-db")
        await self._loop.run_in_executor(self._executor, self._open_db)
        log.info("ledger open", extra={"path": self.path})
        return self

    def _open_db(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)  # transactions are explicit
        db.row_factory = sqlite3.Row
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            db.close()
            raise RuntimeError(f"ledger {self.path}: cannot use WAL (journal_mode={mode})")
        # FULL: a commit is on disk before we answer, even across a power loss.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA:
            db.execute(statement)
        db.execute("COMMIT")
        self._db = db

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._close_db)
        executor.shutdown(wait=True)
        log.info("ledger closed", extra={"path": self.path})

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None or self._loop is None:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, "LEDGER_CLOSED", "the ledger is not open"
            )
        return await self._loop.run_in_executor(self._executor, fn, *args)

    async def _write(self, fn: Callable[..., tuple[T, list[common_pb2.ExecutionUpdate]]], *args: Any) -> T:
        """Run `fn` all-or-nothing, committed together with whatever other writes are waiting
        (group commit: one fsync for the batch), and answer only once that commit is on disk."""
        if self._executor is None or self._loop is None:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "LEDGER_CLOSED", "the ledger is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        with self._pending_lock:
            self._pending.append((fn, args, future))
            start_flush = not self._flush_scheduled
            self._flush_scheduled = True
        if start_flush:
            self._loop.run_in_executor(self._executor, self._flush)
        return await future

    def _flush(self) -> None:
        """On the database thread: every waiting write in one transaction, each in a savepoint so
        a refused one leaves no trace; publish and answer after COMMIT, in commit order."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
            self._flush_scheduled = False
        db, loop = self._db, self._loop
        assert db is not None and loop is not None
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None, list[common_pb2.ExecutionUpdate]]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for fn, args, future in batch:
                db.execute("SAVEPOINT one_write")
                try:
                    result, written = fn(db, *args)
                except Exception as exc:  # a refusal (ServiceError) or a bug: this write only
                    db.execute("ROLLBACK TO one_write")
                    db.execute("RELEASE one_write")
                    outcomes.append((future, None, exc, []))
                    continue
                db.execute("RELEASE one_write")
                outcomes.append((future, result, None, written))
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            log.exception("ledger batch failed; nothing of it was written")
            for _, _, future in batch:
                loop.call_soon_threadsafe(_settle, future, None, exc)
            return
        for future, result, error, written in outcomes:
            if self._on_commit is not None:
                for update in written:
                    copy = common_pb2.ExecutionUpdate()
                    copy.CopyFrom(update)
                    loop.call_soon_threadsafe(self._on_commit, copy)
            loop.call_soon_threadsafe(_settle, future, result, error)

    # -- commands ----------------------------------------------------------------------------

    async def create_order(self, signal: common_pb2.TradeSignal) -> Created:
        """Claim (user_id, signal_id) and record its PENDING update, or return the existing order."""
        checked = signal_from_pb(signal)  # INVALID_ARGUMENT naming the field
        return await self._write(self._create_order, signal, checked)

    def _create_order(
        self, db: sqlite3.Connection, signal: common_pb2.TradeSignal, checked: Signal
    ) -> tuple[Created, list[common_pb2.ExecutionUpdate]]:
        row = db.execute(
            "SELECT * FROM orders WHERE user_id = ? AND signal_id = ?",
            (checked.user_id, checked.signal_id),
        ).fetchone()
        if row is not None:
            first = signal_from_pb(common_pb2.TradeSignal.FromString(row["signal"]))
            if not first.same_order_as(checked):
                raise ServiceError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "SIGNAL_ID_REUSED",
                    f"signal_id {checked.signal_id!r} was already used for a different trade",
                    signal_id=checked.signal_id,
                )
            return Created(created=False, order=_order_pb(row), update=None), []

        now = self._clock()
        sequence = _next_sequence(db, checked.user_id)
        update = common_pb2.ExecutionUpdate(
            signal_id=checked.signal_id,
            user_id=checked.user_id,
            sequence=sequence,
            status=STATUS_TO_PB[Status.PENDING],
            pair=checked.pair,
            side=SIDE_TO_PB[checked.side],
            filled_quantity="0",
            filled_notional="0",
            fees_total="0",
            time=now,
            update_id=pending_update_id(checked.signal_id),
            parent_signal_id=checked.metadata.get(PARENT_KEY, ""),
        )
        db.execute(
            "INSERT INTO orders (user_id, signal_id, signal, pair, side, status, broker,"
            " order_quantity, filled_quantity, filled_notional, fees_total, average_price,"
            " last_sequence, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, '', '', '0', '0', '0', '', ?, ?, ?)",
            (
                checked.user_id,
                checked.signal_id,
                signal.SerializeToString(),
                checked.pair,
                checked.side.value,
                Status.PENDING.value,
                sequence,
                _text(now),
                _text(now),
            ),
        )
        _insert_update(db, update, _text(now))
        order = _order_pb(
            db.execute(
                "SELECT * FROM orders WHERE user_id = ? AND signal_id = ?",
                (checked.user_id, checked.signal_id),
            ).fetchone()
        )
        return Created(created=True, order=order, update=update), [update]

    async def record(self, update: common_pb2.ExecutionUpdate) -> Recorded:
        """Check and persist one state change; answer only once it is durable."""
        change = parse_update(update)  # INVALID_ARGUMENT naming the field
        return await self._write(self._record, update, change)

    def _record(
        self, db: sqlite3.Connection, wire: common_pb2.ExecutionUpdate, change: Change
    ) -> tuple[Recorded, list[common_pb2.ExecutionUpdate]]:
        # A retried write is answered with what was stored, before any check that the
        # first write's own effect would now fail (e.g. FILLED -> FILLED).
        stored = db.execute(
            "SELECT body FROM updates WHERE user_id = ? AND update_id = ?",
            (change.user_id, change.update_id),
        ).fetchone()
        if stored is not None:
            first = common_pb2.ExecutionUpdate.FromString(stored["body"])
            if first.signal_id != change.signal_id or first.status != wire.status:
                raise ServiceError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "UPDATE_ID_REUSED",
                    f"update_id {change.update_id!r} was already used for another update",
                    update_id=change.update_id,
                )
            return Recorded(update=first, duplicate=True), []

        order = db.execute(
            "SELECT * FROM orders WHERE user_id = ? AND signal_id = ?",
            (change.user_id, change.signal_id),
        ).fetchone()
        if order is None:
            raise not_found(
                "ORDER_NOT_FOUND",
                f"no order for signal {change.signal_id!r} of user {change.user_id!r}",
                signal_id=change.signal_id,
            )

        current = Status(order["status"])
        try:
            check_transition(current, change.status)
        except IllegalTransition as exc:
            log.warning(
                "illegal transition refused",
                extra={
                    "user_id": change.user_id,
                    "signal_id": change.signal_id,
                    "update_id": change.update_id,
                    "current": current.value,
                    "requested": change.status.value,
                },
            )
            raise precondition(
                "ILLEGAL_TRANSITION", str(exc), current=current.value, requested=change.status.value
            ) from None

        broker = change.broker or order["broker"]
        new_fills: list[FillEntry] = []
        totals = _recorded_totals(db, change.user_id, change.signal_id)
        if change.fills:
            if not broker:
                raise invalid("BAD_BROKER", "an update with fills needs a broker", field="broker")
            new_fills, duplicates = split_fills(
                change.fills, _already_recorded(db, broker, change.fills)
            )
            for fill in duplicates:
                log.warning(
                    "duplicate fill dropped",
                    extra={
                        "user_id": change.user_id,
                        "signal_id": change.signal_id,
                        "update_id": change.update_id,
                        "broker": broker,
                        "venue_trade_id": fill.venue_trade_id,
                    },
                )
            totals = totals.plus(new_fills)

        order_quantity = change.order_quantity
        if order_quantity is None and order["order_quantity"]:
            order_quantity = Decimal(order["order_quantity"])
        try:
            check_overfill(totals, order_quantity)
        except ServiceError as err:
            log.warning(
                "overfill refused",
                extra={
                    "user_id": change.user_id,
                    "signal_id": change.signal_id,
                    "update_id": change.update_id,
                    **err.metadata,
                },
            )
            raise

        now = self._clock()
        persisted = common_pb2.ExecutionUpdate()
        persisted.CopyFrom(wire)
        del persisted.fills[:]
        persisted.fills.extend(wire.fills[f.index] for f in new_fills)
        persisted.sequence = _next_sequence(db, change.user_id)
        persisted.broker = broker
        persisted.pair = persisted.pair or order["pair"]
        if persisted.side == common_pb2.SIDE_UNSPECIFIED:
            persisted.side = SIDE_TO_PB[Side(order["side"])]
        if _is_unset(persisted.time):
            persisted.time.CopyFrom(now)
        persisted.order_quantity = (
            wire_decimal(order_quantity) if order_quantity is not None else ""
        )
        _complete_figures(persisted, change, order, totals, bool(new_fills))

        _insert_update(db, persisted, _text(now))
        db.executemany(
            "INSERT INTO fills (broker, venue_trade_id, user_id, signal_id, sequence, price,"
            " quantity, fee, fee_currency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    broker,
                    f.venue_trade_id,
                    change.user_id,
                    change.signal_id,
                    persisted.sequence,
                    wire_decimal(f.price),
                    wire_decimal(f.quantity),
                    wire_decimal(f.fee),
                    wire.fills[f.index].fee_currency,
                )
                for f in new_fills
            ],
        )
        db.execute(
            "UPDATE orders SET status = ?, broker = ?, order_quantity = ?, filled_quantity = ?,"
            " filled_notional = ?, fees_total = ?, average_price = ?, last_sequence = ?,"
            " updated_at = ? WHERE user_id = ? AND signal_id = ?",
            (
                change.status.value,
                broker,
                persisted.order_quantity,
                persisted.filled_quantity,
                persisted.filled_notional,
                persisted.fees_total,
                persisted.average_price,
                persisted.sequence,
                _text(now),
                change.user_id,
                change.signal_id,
            ),
        )
        return Recorded(update=persisted, duplicate=False), [persisted]

    # -- the feed to the permission service -------------------------------------------------

    async def feed(self, name: str, limit: int = 200) -> list[tuple[int, common_pb2.ExecutionUpdate]]:
        """Updates with fills or a final state after consumer `name`'s cursor, in insertion
        order, each with its position (pass the last one to `advance_feed` once handled)."""
        return await self._run(self._feed, name, limit)

    def _feed(self, name: str, limit: int) -> list[tuple[int, common_pb2.ExecutionUpdate]]:
        assert self._db is not None
        row = self._db.execute("SELECT position FROM feed_cursors WHERE name = ?", (name,)).fetchone()
        rows = self._db.execute(_FEED_QUERY, (row["position"] if row else 0, limit)).fetchall()
        return [(r["position"], common_pb2.ExecutionUpdate.FromString(r["body"])) for r in rows]

    async def advance_feed(self, name: str, position: int) -> None:
        await self._write(self._advance_feed, name, position)

    @staticmethod
    def _advance_feed(db: sqlite3.Connection, name: str, position: int) -> tuple[None, list[common_pb2.ExecutionUpdate]]:
        db.execute(
            "INSERT INTO feed_cursors (name, position) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET position = MAX(position, excluded.position)",
            (name, position),
        )
        return None, []

    # -- queries -----------------------------------------------------------------------------

    async def replay(
        self, user_id: str, after_sequence: int, signal_id: str | None = None, limit: int = 500
    ) -> list[common_pb2.ExecutionUpdate]:
        """The user's updates with sequence > after_sequence, oldest first, at most `limit`."""
        return await self._run(self._replay, user_id, after_sequence, signal_id, limit)

    def _replay(
        self, user_id: str, after_sequence: int, signal_id: str | None, limit: int
    ) -> list[common_pb2.ExecutionUpdate]:
        assert self._db is not None
        if signal_id:
            rows = self._db.execute(
                "SELECT body FROM updates WHERE user_id = ? AND signal_id = ? AND sequence > ?"
                " ORDER BY sequence LIMIT ?",
                (user_id, signal_id, after_sequence, limit),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT body FROM updates WHERE user_id = ? AND sequence > ?"
                " ORDER BY sequence LIMIT ?",
                (user_id, after_sequence, limit),
            ).fetchall()
        return [common_pb2.ExecutionUpdate.FromString(r["body"]) for r in rows]

    async def get_order(self, user_id: str, signal_id: str) -> aggregator_pb2.Order:
        if not user_id:
            raise invalid("BAD_USER_ID", "user_id is required", field="user_id")
        if not signal_id:
            raise invalid("BAD_SIGNAL_ID", "signal_id is required", field="signal_id")
        return await self._run(self._get_order, user_id, signal_id)

    def _get_order(self, user_id: str, signal_id: str) -> aggregator_pb2.Order:
        assert self._db is not None
        row = self._db.execute(
            "SELECT * FROM orders WHERE user_id = ? AND signal_id = ?", (user_id, signal_id)
        ).fetchone()
        if row is None:
            raise not_found(
                "ORDER_NOT_FOUND",
                f"no order for signal {signal_id!r} of user {user_id!r}",
                signal_id=signal_id,
            )
        return _order_pb(row)
