"""The ledger: orders, their updates and fills, and each user's update sequence. Durable.

All database work runs on one dedicated thread (a single-worker executor): the event loop never
waits on the disk, and since transactions run there one at a time, the read-check-write of a
request and the sequence number it takes are atomic without further locking. A request is
answered only after its transaction committed (WAL, synchronous=FULL); a refused request rolls
back and writes nothing.

Committed updates are handed to `on_commit` on the event loop in commit order: they are scheduled
from the database thread right after COMMIT, before the caller's answer, so live watchers see each
user's updates in sequence order and no later than the writer does.

The database is the SQLite file (the embedded default) or PostgreSQL (a postgresql:// URL from
NIJA_DATABASE_URL, services.aggregator.backends); the SQL is written once for both.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, localcontext
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from nija.aggregator.v1 import aggregator_pb2
from nija.common.v1 import common_pb2

from services.aggregator.backends import columns, connect, is_postgres, schema_words
from services.aggregator.rules import (
    Change,
    FillEntry,
    Totals,
    check_overfill,
    parse_update,
    split_fills,
    wire_decimal,
)
from services.domain.money import ZERO, fmt, quantize_derived
from services.domain.positions import EXACT, Position, apply_fill
from services.domain.signal import PARENT_KEY, Side, Signal, SignalProblem, check_id, check_pair
from services.domain.states import TERMINAL, IllegalTransition, Status, check_transition
from services.runtime import metrics
from services.runtime.errors import ServiceError, invalid, not_found, precondition
from services.runtime.wire import (
    SIDE_TO_PB,
    STATUS_FROM_PB,
    STATUS_TO_PB,
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
        signal          {blob} NOT NULL,
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
        {rowid}
        user_id     TEXT NOT NULL,
        sequence    BIGINT NOT NULL,
        update_id   TEXT NOT NULL,
        signal_id   TEXT NOT NULL,
        status      TEXT NOT NULL,
        broker      TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        body        {blob} NOT NULL,
        PRIMARY KEY (user_id, sequence),
        UNIQUE (user_id, update_id)
    )
    """,
    "CREATE INDEX IF NOT EXISTS updates_by_signal ON updates (user_id, signal_id, sequence)",
    """
    CREATE TABLE IF NOT EXISTS fills (
        {rowid}
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
    # ListOrders: a user's orders newest first, paged by (created_at, signal_id).
    "CREATE INDEX IF NOT EXISTS orders_by_user_created ON orders (user_id, created_at, signal_id)",
    # The stale-order sweep: orders unchanged in one status since long ago (services.aggregator.sweeper).
    "CREATE INDEX IF NOT EXISTS orders_by_status_updated ON orders (status, updated_at)",
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

#: Columns the orders table gained after its first version, added to an older ledger at open.
ADDED_ORDER_COLUMNS: tuple[tuple[str, str], ...] = (
    # Who created the order (CreateOrderRequest.submission_id): a retry of theirs is recognized.
    ("submission_id", "TEXT NOT NULL DEFAULT ''"),
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


#: `_record`'s first read: always one row, with the update already stored under the update_id
#: (`stored`, NULL if none) and the order's columns (NULL if there is no such order).
_RECORD_LOOKUP = """
SELECT u.body AS stored, o.* FROM (SELECT 1 AS one) AS one
LEFT JOIN updates u ON u.user_id = ? AND u.update_id = ?
LEFT JOIN orders o ON o.user_id = ? AND o.signal_id = ?
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
#: A write's outcome after its batch: (its future, its result, its error, the updates it wrote).
_Outcome = tuple["asyncio.Future[Any]", Any, "BaseException | None", Sequence[common_pb2.ExecutionUpdate]]
Clock = Callable[[], timestamp_pb2.Timestamp]


def pending_update_id(signal_id: str) -> str:
    return f"{signal_id}:pending"


def _text(ts: timestamp_pb2.Timestamp) -> str:
    # RFC 3339 UTC with all nine fraction digits: fixed width, so the stored text sorts (and
    # compares with query bounds) in time order, which the variable-width ToJsonString does not
    # ("...:00Z" sorts after "...:00.5Z"). Rows written before this held ToJsonString's form.
    return f"{_whole_seconds_text(ts.seconds)}.{ts.nanos:09d}Z"


@functools.lru_cache(maxsize=256)
def _whole_seconds_text(seconds: int) -> str:
    """"YYYY-MM-DDTHH:MM:SS" of `seconds` (ValueError out of RFC 3339's range, as ToJsonString).
    Cached: the writes of a batch share their second or so."""
    return timestamp_pb2.Timestamp(seconds=seconds).ToJsonString()[:19]


def _timestamp(text: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(text)
    return ts


def _now() -> timestamp_pb2.Timestamp:
    """`now_pb` (microseconds, as it gives) without its trip through datetime: a clock read per
    write."""
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(time.time_ns() // 1000)
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
        "UPDATE user_sequences SET last_sequence = last_sequence + 1 WHERE user_id = ? RETURNING last_sequence",
        (user_id,),
    ).fetchone()
    if row is None:
        db.execute("INSERT INTO user_sequences (user_id, last_sequence) VALUES (?, 1)", (user_id,))
        return 1
    return int(row[0])


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
        self, path: str, *, on_commit: OnCommit | None = None, clock: Clock = _now
    ) -> None:
        self.path = path
        self._on_commit = on_commit
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._db: sqlite3.Connection | None = None  # touched only on the executor's thread
        # Writes waiting for the next group commit: (fn, args, future, arrived at).
        self._pending: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any], float]] = []
        self._pending_lock = threading.Lock()
        self._flush_scheduled = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> Ledger:
        if not is_postgres(self.path):
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-db")
        await self._loop.run_in_executor(self._executor, self._open_db)
        log.info("ledger open", extra={"database": "postgresql" if is_postgres(self.path) else self.path})
        return self

    def _open_db(self) -> None:
        postgres = is_postgres(self.path)
        db = connect(self.path)
        if not postgres:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                db.close()
                raise RuntimeError(f"ledger {self.path}: cannot use WAL (journal_mode={mode})")
            # FULL: a commit is on disk before we answer, even across a power loss. (PostgreSQL's
            # default, synchronous_commit=on, gives the same.)
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
        words = schema_words(postgres)
        db.execute("BEGIN IMMEDIATE")
        if postgres:  # two aggregators starting together must not both create the tables
            db.execute("SELECT pg_advisory_xact_lock(5353)")
        for statement in SCHEMA:
            db.execute(statement.format(**words))
        # Columns added after the first schema (CREATE TABLE IF NOT EXISTS leaves an old table as is).
        present = set(columns(db, "orders"))
        for name, definition in ADDED_ORDER_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE orders ADD COLUMN {name} {definition}")
        db.execute("COMMIT")
        self._db = db  # type: ignore[assignment]

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
        return await self._loop.run_in_executor(self._executor, self._read, fn, args)

    def _read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            self._connection()
            return fn(*args)
        except Exception as exc:
            raise self._lost_connection(exc) from exc

    def _connection(self) -> sqlite3.Connection:
        """The database connection (on the database thread), made again when the server dropped
        the last one (a PostgreSQL restart or failover); the schema was made at open."""
        if self._db is not None and getattr(self._db, "broken", False):
            log.warning("ledger database connection lost; reconnecting")
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None
        if self._db is None:
            self._db = connect(self.path)  # type: ignore[assignment]
        return self._db  # type: ignore[return-value]

    def _lost_connection(self, exc: BaseException) -> BaseException:
        """A failure because the connection was lost is UNAVAILABLE (the caller retries; every
        ledger write is idempotent); any other failure stays what it is."""
        if self._db is None or getattr(self._db, "broken", False):
            return ServiceError(grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE",
                                "the connection to the database was lost; retry")
        return exc

    async def _write(self, fn: Callable[..., tuple[T, list[common_pb2.ExecutionUpdate]]], *args: Any) -> T:
        """Run `fn` all-or-nothing, committed together with whatever other writes are waiting
        (group commit: one fsync for the batch), and answer only once that commit is on disk."""
        return await self._submit(fn, *args)

    def _submit(
        self, fn: Callable[..., tuple[T, list[common_pb2.ExecutionUpdate]]], *args: Any
    ) -> asyncio.Future[T]:
        """`_write` without waiting: the future is settled once the write's batch committed (or
        the write was refused). For a caller with many writes in flight and no task per write."""
        if self._executor is None or self._loop is None:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "LEDGER_CLOSED", "the ledger is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        with self._pending_lock:
            self._pending.append((fn, args, future, time.perf_counter()))
            start_flush = not self._flush_scheduled
            self._flush_scheduled = True
        if start_flush:
            self._loop.run_in_executor(self._executor, self._flush)
        return future

    def _flush(self) -> None:
        """On the database thread: every waiting write in one transaction, a refused one leaving
        no trace; publish and answer after COMMIT, in commit order (one hand-over to the event
        loop per batch)."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
            self._flush_scheduled = False
        loop = self._loop
        assert loop is not None
        try:
            db = self._connection()
            # SQLite: no savepoint per write (two statements each) unless a write that failed
            # had changed rows already; then the batch is rolled back and run again with them.
            # PostgreSQL: always, a failed statement there spoils the whole transaction.
            outcomes = self._apply(db, batch, savepoints=is_postgres(self.path))
            if outcomes is None:
                outcomes = self._apply(db, batch, savepoints=True)
            assert outcomes is not None
        except BaseException as exc:
            exc = self._lost_connection(exc)
            if self._db is not None and self._db.in_transaction:
                self._db.execute("ROLLBACK")
            log.exception("ledger batch failed; nothing of it was written")
            loop.call_soon_threadsafe(self._answer, [(future, None, exc, ()) for _, _, future, _ in batch])
            return
        committed = time.perf_counter()
        for *_, arrived in batch:
            metrics.LEDGER_WRITE_LATENCY.observe(committed - arrived)
        loop.call_soon_threadsafe(self._answer, outcomes)

    @staticmethod
    def _apply(
        db: sqlite3.Connection, batch: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any], float]],
        savepoints: bool,
    ) -> list[_Outcome] | None:
        """Run the batch's writes in one transaction and commit it; None (rolled back) when,
        without savepoints, a write failed after changing rows."""
        outcomes: list[_Outcome] = []
        db.execute("BEGIN IMMEDIATE")
        for fn, args, future, _ in batch:
            if savepoints:
                db.execute("SAVEPOINT one_write")
            else:
                changes = db.total_changes
            try:
                result, written = fn(db, *args)
            except Exception as exc:  # a refusal (ServiceError) or a bug: this write only
                if savepoints:
                    db.execute("ROLLBACK TO one_write")
                    db.execute("RELEASE one_write")
                elif not db.in_transaction:  # SQLite gave the transaction up (disk full, I/O)
                    raise
                elif db.total_changes != changes:
                    db.execute("ROLLBACK")
                    return None
                outcomes.append((future, None, exc, ()))
                continue
            if savepoints:
                db.execute("RELEASE one_write")
            outcomes.append((future, result, None, written))
        db.execute("COMMIT")
        return outcomes

    def _answer(self, outcomes: list[_Outcome]) -> None:
        """On the event loop: each write's updates to `on_commit`, then its answer, in commit
        order. The persisted update is shared, not copied: it is never changed after commit."""
        on_commit = self._on_commit
        for future, result, error, written in outcomes:
            if on_commit is not None:
                for update in written:
                    try:
                        on_commit(update)
                    except Exception:
                        log.exception("on_commit failed", extra={"update_id": update.update_id})
            _settle(future, result, error)

    # -- commands ----------------------------------------------------------------------------

    async def create_order(self, signal: common_pb2.TradeSignal, submission_id: str = "") -> Created:
        """Claim (user_id, signal_id) and record its PENDING update, or return the existing order.
        A retry carrying the submission_id that created the order is answered as its creator."""
        checked = signal_from_pb(signal)  # INVALID_ARGUMENT naming the field
        return await self._write(self._create_order, signal, checked, submission_id)

    def _create_order(
        self, db: sqlite3.Connection, signal: common_pb2.TradeSignal, checked: Signal, submission_id: str
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
            if submission_id and row["submission_id"] == submission_id:
                # Our own first attempt, whose answer was lost: we are the creator.
                body = db.execute(
                    "SELECT body FROM updates WHERE user_id = ? AND update_id = ?",
                    (checked.user_id, pending_update_id(checked.signal_id)),
                ).fetchone()["body"]
                return Created(True, _order_pb(row), common_pb2.ExecutionUpdate.FromString(bytes(body))), []
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
            " last_sequence, created_at, updated_at, submission_id)"
            " VALUES (?, ?, ?, ?, ?, ?, '', '', '0', '0', '0', '', ?, ?, ?, ?)",
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
                submission_id,
            ),
        )
        _insert_update(db, update, _text(now))
        # The row just inserted, as _order_pb would read it back.
        order = aggregator_pb2.Order(
            user_id=checked.user_id,
            signal_id=checked.signal_id,
            signal=signal,
            status=STATUS_TO_PB[Status.PENDING],
            broker="",
            order_quantity="",
            filled_quantity="0",
            filled_notional="0",
            fees_total="0",
            average_price="",
            last_sequence=sequence,
            created_at=now,
            updated_at=now,
        )
        return Created(created=True, order=order, update=update), [update]

    async def record(self, update: common_pb2.ExecutionUpdate) -> Recorded:
        """Check and persist one state change; answer only once it is durable."""
        return await self.enqueue_record(update)

    def enqueue_record(self, update: common_pb2.ExecutionUpdate) -> asyncio.Future[Recorded]:
        """`record` for a caller with many in flight: checks the update now (a malformed one
        raises INVALID_ARGUMENT naming the field), queues it for the next group commit and
        returns the future that settles once it is durable or refused."""
        change = parse_update(update)
        return self._submit(self._record, update, change)

    async def record_if_unchanged(self, update: common_pb2.ExecutionUpdate, sequence: int) -> Recorded | None:
        """`record`, only if the order's last update is still the one with `sequence`, checked in
        the same transaction: None when it has moved on meanwhile."""
        return await self._submit(self._record_if_unchanged, update, parse_update(update), sequence)

    def _record_if_unchanged(
        self, db: sqlite3.Connection, wire: common_pb2.ExecutionUpdate, change: Change, sequence: int
    ) -> tuple[Recorded | None, list[common_pb2.ExecutionUpdate]]:
        row = db.execute(
            "SELECT last_sequence FROM orders WHERE user_id = ? AND signal_id = ?", (change.user_id, change.signal_id)
        ).fetchone()
        if row is None or row["last_sequence"] != sequence:
            return None, []
        return self._record(db, wire, change)

    def _record(
        self, db: sqlite3.Connection, wire: common_pb2.ExecutionUpdate, change: Change
    ) -> tuple[Recorded, list[common_pb2.ExecutionUpdate]]:
        # A retried write is answered with what was stored, before any check that the
        # first write's own effect would now fail (e.g. FILLED -> FILLED).
        # One lookup for both: the update stored under this update_id (if any), the order.
        order = db.execute(_RECORD_LOOKUP, (change.user_id, change.update_id, change.user_id, change.signal_id)).fetchone()
        if order["stored"] is not None:
            first = common_pb2.ExecutionUpdate.FromString(order["stored"])
            if first.signal_id != change.signal_id or first.status != wire.status:
                raise ServiceError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "UPDATE_ID_REUSED",
                    f"update_id {change.update_id!r} was already used for another update",
                    update_id=change.update_id,
                )
            return Recorded(update=first, duplicate=True), []

        if order["user_id"] is None:
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
        order_quantity = change.order_quantity
        if order_quantity is None and order["order_quantity"]:
            order_quantity = Decimal(order["order_quantity"])
        # The recorded fills count only for new fills and for the overfill check.
        needs_totals = bool(change.fills) or (order_quantity is not None and order_quantity > 0)
        totals = _recorded_totals(db, change.user_id, change.signal_id) if needs_totals else Totals()
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
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position"
            " WHERE excluded.position > feed_cursors.position",
            (name, position),
        )
        return None, []

    # -- queries -----------------------------------------------------------------------------

    async def replay(
        self, user_id: str, after_sequence: int, signal_id: str | None = None, limit: int = 500
    ) -> list[common_pb2.ExecutionUpdate]:
        """The user's updates with sequence > after_sequence, oldest first, at most `limit`.

        A wire after_sequence is a uint64; a sequence is stored as a signed 64-bit integer, so one
        past that has nothing after it, as the largest does (the database would refuse it)."""
        return await self._run(self._replay, user_id, min(after_sequence, MAX_SEQUENCE), signal_id, limit)

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

    async def stale(
        self, status: Status, unchanged_since: timestamp_pb2.Timestamp, limit: int = 100
    ) -> list[aggregator_pb2.Order]:
        """Orders in `status` whose last update is older than `unchanged_since`, oldest first."""
        return await self._run(self._stale, status.value, _text(unchanged_since), limit)

    def _stale(self, status: str, unchanged_since: str, limit: int) -> list[aggregator_pb2.Order]:
        assert self._db is not None
        rows = self._db.execute(
            "SELECT * FROM orders WHERE status = ? AND updated_at < ? ORDER BY updated_at LIMIT ?",
            (status, unchanged_since, limit),
        ).fetchall()
        return [_order_pb(row) for row in rows]

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

    async def list_orders(
        self,
        user_id: str,
        statuses: Iterable[int] = (),
        pair: str = "",
        broker: str = "",
        created_from: timestamp_pb2.Timestamp | None = None,
        created_before: timestamp_pb2.Timestamp | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[aggregator_pb2.Order], str]:
        """A page of the user's orders, newest first by (created_at, signal_id), and the token of
        the next page ("" on the last one).

        Keyset pagination: the token is where the page ended, so orders created meanwhile (newer,
        hence before the cursor) neither shift nor repeat what the following pages return.
        `statuses` are wire ExecutionStatus values; empty, "" and unset mean no filter.
        """
        query = _OrdersQuery(
            user_id=_query_user(user_id),
            statuses=_query_statuses(statuses),
            pair=_query_pair(pair),
            broker=_query_broker(broker),
            created_from=_query_bound(created_from, "created_from"),
            created_before=_query_bound(created_before, "created_before"),
            page_size=_query_page_size(page_size),
            after=_page_after(page_token) if page_token else None,
        )
        return await self._run(self._list_orders, query)

    def _list_orders(self, query: _OrdersQuery) -> tuple[list[aggregator_pb2.Order], str]:
        assert self._db is not None
        where, params = ["user_id = ?"], [query.user_id]
        if query.statuses:
            where.append(f"status IN ({', '.join('?' for _ in query.statuses)})")
            params.extend(query.statuses)
        if query.pair:
            where.append("pair = ?")
            params.append(query.pair)
        if query.broker:
            where.append("broker = ?")
            params.append(query.broker)
        if query.created_from is not None:
            where.append("created_at >= ?")
            params.append(query.created_from)
        if query.created_before is not None:
            where.append("created_at < ?")
            params.append(query.created_before)
        if query.after is not None:
            created_at, signal_id = query.after
            where.append("(created_at < ? OR (created_at = ? AND signal_id < ?))")
            params.extend((created_at, created_at, signal_id))
        # created_at compares as text: fixed-width RFC 3339 (see _text), so in time order.
        # Rows are read only as far as the page goes: a page of large orders ends long before
        # page_size (a full page of them would be ~5 MB read and decoded for ~1 MiB sent).
        page, size, more = [], 0, False
        with contextlib.closing(self._db.execute(
            f"SELECT * FROM orders WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, signal_id DESC LIMIT ?",
            (*params, query.page_size + 1),
        )) as rows:
            for row in rows:
                if len(page) == query.page_size:
                    more = True
                    break
                order = _order_pb(row)
                size += order.ByteSize() + 8  # and its tag and length in the response
                if page and size > MAX_PAGE_BYTES:
                    more = True
                    break
                page.append((row, order))
        token = _page_token(page[-1][0]["created_at"], page[-1][0]["signal_id"]) if more else ""
        return [order for _, order in page], token

    async def list_fills(self, user_id: str, signal_id: str) -> list[aggregator_pb2.RecordedFill]:
        """The order's fills in the order they were recorded (NOT_FOUND for an unknown order)."""
        user_id = _query_user(user_id)
        try:
            check_id(signal_id, "signal_id")
        except SignalProblem as problem:
            raise invalid("BAD_SIGNAL_ID", str(problem), field="signal_id") from None
        return await self._run(self._list_fills, user_id, signal_id)

    def _list_fills(self, user_id: str, signal_id: str) -> list[aggregator_pb2.RecordedFill]:
        assert self._db is not None
        self._get_order(user_id, signal_id)  # NOT_FOUND
        # rowid: insertion order, which within one update is the order of its fills.
        rows = self._db.execute(
            "SELECT f.broker, f.venue_trade_id, f.sequence, f.price, f.quantity, f.fee,"
            " f.fee_currency, u.body FROM fills f"
            " JOIN updates u ON u.user_id = f.user_id AND u.sequence = f.sequence"
            " WHERE f.user_id = ? AND f.signal_id = ? ORDER BY f.sequence, f.rowid",
            (user_id, signal_id),
        ).fetchall()
        carried: dict[int, dict[str, common_pb2.Fill]] = {}
        recorded: list[aggregator_pb2.RecordedFill] = []
        for r in rows:
            if r["sequence"] not in carried:
                body = common_pb2.ExecutionUpdate.FromString(r["body"])
                carried[r["sequence"]] = {f.venue_trade_id: f for f in body.fills}
            # Figures as the ledger counted them; liquidity and time as the venue reported them.
            sent = carried[r["sequence"]].get(r["venue_trade_id"], common_pb2.Fill())
            pb = common_pb2.Fill(
                venue_trade_id=r["venue_trade_id"],
                price=r["price"],
                quantity=r["quantity"],
                fee=r["fee"],
                fee_currency=r["fee_currency"],
                liquidity=sent.liquidity,
            )
            if sent.HasField("time"):
                pb.time.CopyFrom(sent.time)
            recorded.append(
                aggregator_pb2.RecordedFill(
                    signal_id=signal_id, broker=r["broker"], sequence=r["sequence"], fill=pb
                )
            )
        return recorded

    async def daily_summary(self, user_id: str, day: str = "") -> aggregator_pb2.GetDailySummaryResponse:
        """The user's figures for one UTC day ("YYYY-MM-DD"; "" = today), by broker."""
        user_id = _query_user(user_id)
        if day:
            when = _parse_day(day)
        else:
            when = self._clock().ToDatetime(tzinfo=datetime.timezone.utc).date()
        return await self._run(self._daily_summary, user_id, when)

    def _daily_summary(self, user_id: str, day: datetime.date) -> aggregator_pb2.GetDailySummaryResponse:
        assert self._db is not None
        try:
            # Text bounds: "YYYY-MM-DD" sorts before every instant of that day and after every
            # instant of the day before, whatever the fraction digits of the stored times.
            start, end = day.isoformat(), (day + datetime.timedelta(days=1)).isoformat()
        except OverflowError:
            raise invalid("BAD_DAY", f"no day after {day.isoformat()}", field="day") from None
        figures: dict[str, _BrokerFigures] = {}

        def of(broker: str) -> _BrokerFigures:
            return figures.setdefault(broker, _BrokerFigures())

        # Orders by the day they were created, under the broker they went to ("" never routed).
        for r in self._db.execute(
            "SELECT broker, COUNT(*) AS n FROM orders"
            " WHERE user_id = ? AND created_at >= ? AND created_at < ? GROUP BY broker",
            (user_id, start, end),
        ):
            of(r["broker"]).orders += int(r["n"])

        # A fill belongs to the day the ledger recorded it (its update's recorded_at, the ledger's
        # own clock, always present), not to the venue's fill time (optional, another clock): a
        # fill done at 23:59:59.9 and recorded at 00:00:00.1 counts on the later day.
        #
        # Realized PnL: every fill of the user up to the end of the day, in sequence order,
        # through one average-cost position per pair (across brokers), as the permission service
        # books positions; each fill's realized delta goes to its own broker, counted if the fill
        # was recorded on the day.
        positions: dict[str, Position] = {}
        rows = self._db.execute(
            "SELECT f.broker, f.price, f.quantity, f.fee, o.pair, o.side, u.recorded_at FROM fills f"
            " JOIN updates u ON u.user_id = f.user_id AND u.sequence = f.sequence"
            " JOIN orders o ON o.user_id = f.user_id AND o.signal_id = f.signal_id"
            " WHERE f.user_id = ? AND u.recorded_at < ? ORDER BY f.sequence, f.rowid",
            (user_id, end),
        )
        with localcontext(EXACT):
            for r in rows:
                price, quantity, fee = Decimal(r["price"]), Decimal(r["quantity"]), Decimal(r["fee"])
                pair = r["pair"]
                position, realized = apply_fill(
                    positions.get(pair) or Position(pair), Side(r["side"]), price, quantity, fee
                )
                positions[pair] = position
                if r["recorded_at"] < start:
                    continue
                broker = of(r["broker"])
                broker.fills += 1
                broker.traded_notional += price * quantity
                broker.fees += fee
                broker.realized_pnl += realized

            total = _BrokerFigures()
            for f in figures.values():
                total.orders += f.orders
                total.fills += f.fills
                total.traded_notional += f.traded_notional
                total.fees += f.fees
                total.realized_pnl += f.realized_pnl
        return aggregator_pb2.GetDailySummaryResponse(
            day=day.isoformat(),
            brokers=[f.pb(broker) for broker, f in sorted(figures.items())],
            total=total.pb(""),
        )


# -- query helpers ----------------------------------------------------------------------------

DEFAULT_PAGE_SIZE = 100
#: The largest sequence (and delivery position) a database column holds: signed 64-bit.
MAX_SEQUENCE = 2**63 - 1
MAX_PAGE_SIZE = 1000
#: A page of orders is cut short (its next_page_token says more remain) before it holds this many
#: bytes: an order's signal may carry ~33 KiB of metadata, so a full page of 1,000 could be ~33 MB,
#: far over the 4 MiB a response may be (it would be refused RESOURCE_EXHAUSTED, page after page).
#: 1,000 ordinary orders (~260 B each) fit. Half a MiB keeps one call's work to a few ms on the
#: server's one event loop: at 1 MiB, a client paging through large orders doubled everyone
#: else's p99 (test_edge.py's oversized abuse: 2.2x, now 1.6-1.7x).
MAX_PAGE_BYTES = 512 * 1024
_MAX_BROKER = 64
_MAX_PAGE_TOKEN = 1024
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclasses.dataclass(frozen=True)
class _OrdersQuery:
    user_id: str
    statuses: tuple[str, ...]
    pair: str
    broker: str
    created_from: str | None
    created_before: str | None
    page_size: int
    #: (created_at, signal_id) of the last order of the previous page.
    after: tuple[str, str] | None


@dataclasses.dataclass
class _BrokerFigures:
    orders: int = 0
    fills: int = 0
    traded_notional: Decimal = ZERO
    fees: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    def pb(self, broker: str) -> aggregator_pb2.BrokerSummary:
        return aggregator_pb2.BrokerSummary(
            broker=broker,
            orders=self.orders,
            fills=self.fills,
            traded_notional=fmt(self.traded_notional),
            fees=fmt(self.fees),
            realized_pnl=fmt(self.realized_pnl),
        )


def _query_user(user_id: str) -> str:
    if not user_id:
        raise invalid("BAD_USER_ID", "user_id is required", field="user_id")
    try:
        return check_id(user_id, "user_id")
    except SignalProblem as problem:
        raise invalid("BAD_USER_ID", str(problem), field="user_id") from None


def _query_statuses(statuses: Iterable[int]) -> tuple[str, ...]:
    wanted: set[str] = set()
    for value in statuses:
        status = STATUS_FROM_PB.get(value)
        if status is None:
            raise invalid(
                "BAD_STATUSES",
                f"statuses must be known ExecutionStatus values other than UNSPECIFIED, got {value}",
                field="statuses",
            )
        wanted.add(status.value)
    return tuple(sorted(wanted))


def _query_pair(pair: str) -> str:
    if not pair:
        return ""
    try:
        return check_pair(pair)
    except SignalProblem as problem:
        raise invalid("BAD_PAIR", str(problem), field="pair") from None


def _query_broker(broker: str) -> str:
    if len(broker) > _MAX_BROKER:
        raise invalid("BAD_BROKER", f"broker must be at most {_MAX_BROKER} characters", field="broker")
    return broker


def _query_bound(ts: timestamp_pb2.Timestamp | None, field: str) -> str | None:
    if ts is None or _is_unset(ts):
        return None
    try:
        return _text(ts)
    except ValueError as exc:
        raise invalid(f"BAD_{field.upper()}", str(exc), field=field) from None


def _query_page_size(page_size: int) -> int:
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise invalid(
            "BAD_PAGE_SIZE", f"page_size must be at most {MAX_PAGE_SIZE}, got {page_size}", field="page_size"
        )
    return page_size or DEFAULT_PAGE_SIZE


def _page_token(created_at: str, signal_id: str) -> str:
    raw = json.dumps({"c": created_at, "s": signal_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_after(token: str) -> tuple[str, str]:
    """The (created_at, signal_id) a page token holds; INVALID_ARGUMENT BAD_PAGE_TOKEN if it is
    not one this ledger wrote."""
    try:
        if len(token) > _MAX_PAGE_TOKEN:
            raise ValueError("too long")
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        data = json.loads(raw)
        created_at, signal_id = data["c"], data["s"]
        if not isinstance(created_at, str) or not isinstance(signal_id, str):
            raise ValueError("not strings")
        _timestamp(created_at)  # ValueError unless an RFC 3339 time
        check_id(signal_id, "signal_id")
    except (ValueError, KeyError, TypeError, binascii.Error, SignalProblem):
        raise invalid("BAD_PAGE_TOKEN", "page_token is not a token this service issued", field="page_token") from None
    return created_at, signal_id


def _parse_day(day: str) -> datetime.date:
    try:
        if not _DAY_RE.fullmatch(day):
            raise ValueError(day)
        return datetime.date.fromisoformat(day)
    except ValueError:
        raise invalid("BAD_DAY", f"day must be a date YYYY-MM-DD, got {day[:40]!r}", field="day") from None


# =================================================================================================
# Webhook notifications: the webhooks and their outbox (the deliveries), in the ledger's database.
# The rules, the sender and the wire live in services/aggregator/notifications.py; this is the
# storage only. Everything runs on the ledger's database thread (reads through `_run`, writes
# through `_write`, group-committed with the ledger's own writes), and every write here is a few
# rows: the ledger's writers never wait on an HTTP receiver.
# =================================================================================================

#: The ledger feed (see `Ledger.feed`) the outbox follows to turn updates into deliveries.
OUTBOX_FEED = "webhook-outbox"

#: Events and delivery statuses as stored (the event is also the X-Nija-Event header value).
NOTIFICATION_EVENTS: dict[str, int] = {
    "fill": aggregator_pb2.NOTIFICATION_EVENT_FILL,
    "rejected": aggregator_pb2.NOTIFICATION_EVENT_REJECTED,
    "kill_switch": aggregator_pb2.NOTIFICATION_EVENT_KILL_SWITCH,
}
DELIVERY_STATUSES: dict[str, int] = {
    "pending": aggregator_pb2.DELIVERY_STATUS_PENDING,
    "delivered": aggregator_pb2.DELIVERY_STATUS_DELIVERED,
    "failed": aggregator_pb2.DELIVERY_STATUS_FAILED,
}

WEBHOOK_SCHEMA: tuple[str, ...] = (
    # A user's endpoints. `events` is the chosen event names, comma separated. `since_position` is
    # the last update (rowid) recorded before the webhook was created: it is told of later ones
    # only. Times are unix seconds. The secret is kept as is: signing needs it.
    """
    CREATE TABLE IF NOT EXISTS webhooks (
        webhook_id     TEXT NOT NULL PRIMARY KEY,
        user_id        TEXT NOT NULL,
        url            TEXT NOT NULL,
        events         TEXT NOT NULL,
        secret         TEXT NOT NULL,
        since_position BIGINT NOT NULL,
        created_at     DOUBLE PRECISION NOT NULL,
        updated_at     DOUBLE PRECISION NOT NULL,
        UNIQUE (user_id, url)
    )
    """,
    # The outbox: one row per (webhook, event), whatever the number of attempts. `event_key` makes
    # enqueueing idempotent ("fill:<sequence>", "rejected:<sequence>", "kill_switch:<change id>");
    # `payload` is the event's JSON object (the update, or the kill switch change); `position`
    # numbers the rows in insertion order (taken inside the single-writer transaction).
    """
    CREATE TABLE IF NOT EXISTS webhook_deliveries (
        delivery_id     TEXT NOT NULL PRIMARY KEY,
        position        BIGINT NOT NULL UNIQUE,
        webhook_id      TEXT NOT NULL,
        user_id         TEXT NOT NULL,
        event           TEXT NOT NULL,
        event_key       TEXT NOT NULL,
        sequence        BIGINT NOT NULL,
        payload         TEXT NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL,
        last_error      TEXT NOT NULL,
        next_attempt_at DOUBLE PRECISION,
        delivered_at    DOUBLE PRECISION,
        created_at      DOUBLE PRECISION NOT NULL,
        UNIQUE (webhook_id, event_key)
    )
    """,
    "CREATE INDEX IF NOT EXISTS deliveries_due ON webhook_deliveries (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS deliveries_by_user ON webhook_deliveries (user_id, position)",
    "CREATE INDEX IF NOT EXISTS deliveries_by_webhook ON webhook_deliveries (webhook_id, position)",
    # A new outbox starts at the end of the ledger: no webhook existed before it. ("WHERE true":
    # SQLite's parser needs it between a SELECT and ON CONFLICT.)
    f"""
    INSERT INTO feed_cursors (name, position)
    SELECT '{OUTBOX_FEED}', COALESCE(MAX(rowid), 0) FROM updates WHERE true
    ON CONFLICT (name) DO NOTHING
    """,
)


@dataclasses.dataclass(frozen=True)
class EventToSend:
    """An event the outbox found in an update, for the user's webhooks subscribed to it."""

    position: int  # the update's feed position: webhooks created after it are not told
    user_id: str
    sequence: int
    event: str
    payload: str  # JSON object


@dataclasses.dataclass(frozen=True)
class DueDelivery:
    """A pending delivery whose time has come, with what sending it needs."""

    delivery_id: str
    webhook_id: str
    user_id: str
    url: str
    secret: str
    event: str
    payload: str
    attempts: int


@dataclasses.dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt, as recorded."""

    delivery_id: str
    status: str  # "delivered", "pending" (to retry) or "failed" (given up)
    attempts: int
    last_error: str
    next_attempt_at: float | None
    delivered_at: float | None


def _seconds_pb(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def _event_names(column: str) -> list[str]:
    return [e for e in column.split(",") if e]


def _webhook_pb(row: sqlite3.Row) -> aggregator_pb2.Webhook:
    return aggregator_pb2.Webhook(
        webhook_id=row["webhook_id"],
        user_id=row["user_id"],
        url=row["url"],
        events=[NOTIFICATION_EVENTS[e] for e in _event_names(row["events"])],
        created_at=_seconds_pb(row["created_at"]),
        updated_at=_seconds_pb(row["updated_at"]),
    )


def _delivery_pb(row: sqlite3.Row) -> aggregator_pb2.Delivery:
    return aggregator_pb2.Delivery(
        delivery_id=row["delivery_id"],
        webhook_id=row["webhook_id"],
        event=NOTIFICATION_EVENTS[row["event"]],
        sequence=row["sequence"],
        status=DELIVERY_STATUSES[row["status"]],
        attempts=row["attempts"],
        last_error=row["last_error"],
        next_attempt_at=_seconds_pb(row["next_attempt_at"]),
        delivered_at=_seconds_pb(row["delivered_at"]),
        created_at=_seconds_pb(row["created_at"]),
    )


def _new_delivery_id() -> str:
    return "dlv_" + os.urandom(12).hex()


def _insert_delivery(
    db: sqlite3.Connection, webhook_id: str, user_id: str, event: str, event_key: str,
    sequence: int, payload: str, now: float,
) -> bool:
    (position,) = db.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM webhook_deliveries").fetchone()
    cursor = db.execute(
        "INSERT INTO webhook_deliveries (delivery_id, position, webhook_id, user_id, event, event_key,"
        " sequence, payload, status, attempts, last_error, next_attempt_at, delivered_at, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, '', ?, NULL, ?)"
        " ON CONFLICT (webhook_id, event_key) DO NOTHING",
        (_new_delivery_id(), position, webhook_id, user_id, event, event_key, sequence, payload, now, now),
    )
    return cursor.rowcount == 1


class WebhookStore:
    """The webhook tables, on the ledger's database thread. `await open()` after the ledger's."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def _db(self) -> sqlite3.Connection:
        db = self._ledger._db
        assert db is not None
        return db

    async def open(self) -> WebhookStore:
        await self._ledger._write(self._create_tables)
        return self

    @staticmethod
    def _create_tables(db: sqlite3.Connection) -> tuple[None, list[common_pb2.ExecutionUpdate]]:
        for statement in WEBHOOK_SCHEMA:
            db.execute(statement)
        return None, []

    # -- webhooks -----------------------------------------------------------------------------

    async def set_webhook(
        self, webhook_id: str, user_id: str, url: str, events: Sequence[str], secret: str,
        now: float, max_per_user: int,
    ) -> tuple[aggregator_pb2.Webhook, bool]:
        """Create the user's webhook for `url` (with `webhook_id`), or replace its events and
        secret; returns it and whether it was created."""
        return await self._ledger._write(
            self._set_webhook, webhook_id, user_id, url, ",".join(events), secret, now, max_per_user
        )

    @staticmethod
    def _set_webhook(
        db: sqlite3.Connection, webhook_id: str, user_id: str, url: str, events: str, secret: str,
        now: float, max_per_user: int,
    ) -> tuple[tuple[aggregator_pb2.Webhook, bool], list[common_pb2.ExecutionUpdate]]:
        row = db.execute(
            "SELECT webhook_id FROM webhooks WHERE user_id = ? AND url = ?", (user_id, url)
        ).fetchone()
        created = row is None
        if created:
            (count,) = db.execute("SELECT COUNT(*) FROM webhooks WHERE user_id = ?", (user_id,)).fetchone()
            if count >= max_per_user:
                raise precondition(
                    "TOO_MANY_WEBHOOKS",
                    f"user {user_id!r} has {count} webhooks, the most allowed; delete one first",
                    limit=str(max_per_user),
                )
            (since,) = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM updates").fetchone()
            db.execute(
                "INSERT INTO webhooks (webhook_id, user_id, url, events, secret, since_position,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (webhook_id, user_id, url, events, secret, since, now, now),
            )
        else:
            webhook_id = row["webhook_id"]
            db.execute(
                "UPDATE webhooks SET events = ?, secret = ?, updated_at = ? WHERE webhook_id = ?",
                (events, secret, now, webhook_id),
            )
        stored = db.execute("SELECT * FROM webhooks WHERE webhook_id = ?", (webhook_id,)).fetchone()
        return (_webhook_pb(stored), created), []

    async def list_webhooks(self, user_id: str) -> list[aggregator_pb2.Webhook]:
        return await self._ledger._run(self._list_webhooks, user_id)

    def _list_webhooks(self, user_id: str) -> list[aggregator_pb2.Webhook]:
        rows = self._db().execute(
            "SELECT * FROM webhooks WHERE user_id = ? ORDER BY created_at, webhook_id", (user_id,)
        ).fetchall()
        return [_webhook_pb(r) for r in rows]

    async def delete_webhook(self, user_id: str, webhook_id: str) -> None:
        """Delete the webhook and its deliveries; NOT_FOUND unless it is the user's."""
        await self._ledger._write(self._delete_webhook, user_id, webhook_id)

    @staticmethod
    def _delete_webhook(
        db: sqlite3.Connection, user_id: str, webhook_id: str
    ) -> tuple[None, list[common_pb2.ExecutionUpdate]]:
        deleted = db.execute(
            "DELETE FROM webhooks WHERE webhook_id = ? AND user_id = ?", (webhook_id, user_id)
        ).rowcount
        if not deleted:
            raise _webhook_not_found(user_id, webhook_id)
        db.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
        return None, []

    # -- deliveries: the outbox -----------------------------------------------------------------

    async def outbox_cursor(self) -> int:
        """Where the outbox's persisted cursor stands (the last update position it handled)."""
        return await self._ledger._run(self._outbox_cursor)

    def _outbox_cursor(self) -> int:
        row = self._db().execute("SELECT position FROM feed_cursors WHERE name = ?", (OUTBOX_FEED,)).fetchone()
        return row["position"] if row else 0

    async def outbox_batch(
        self, after: int, limit: int
    ) -> tuple[list[tuple[int, common_pb2.ExecutionUpdate]], dict[str, set[str]]]:
        """The updates after position `after` that `Ledger.feed` would give (fills, final states,
        creations), and the events their users' webhooks are subscribed to (users without
        webhooks left out)."""
        return await self._ledger._run(self._outbox_batch, after, limit)

    def _outbox_batch(
        self, after: int, limit: int
    ) -> tuple[list[tuple[int, common_pb2.ExecutionUpdate]], dict[str, set[str]]]:
        rows = [
            (r["position"], common_pb2.ExecutionUpdate.FromString(r["body"]))
            for r in self._db().execute(_FEED_QUERY, (after, limit)).fetchall()
        ]
        users = sorted({u.user_id for _, u in rows})
        subscribed: dict[str, set[str]] = {}
        for start in range(0, len(users), 500):
            chunk = users[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            for r in self._db().execute(
                f"SELECT user_id, events FROM webhooks WHERE user_id IN ({marks})", chunk
            ).fetchall():
                subscribed.setdefault(r["user_id"], set()).update(_event_names(r["events"]))
        return rows, subscribed

    async def enqueue_updates(self, position: int, events: Sequence[EventToSend], now: float) -> int:
        """Deliveries for `events` to each of their user's webhooks subscribed to them (created
        before the update), and the outbox cursor moved to `position`, in one write. Idempotent:
        an event enqueued again (a cursor persisted late) adds nothing. Returns how many
        deliveries were created."""
        return await self._ledger._write(self._enqueue_updates, position, list(events), now)

    @staticmethod
    def _enqueue_updates(
        db: sqlite3.Connection, position: int, events: list[EventToSend], now: float
    ) -> tuple[int, list[common_pb2.ExecutionUpdate]]:
        created = 0
        hooks: dict[str, list[sqlite3.Row]] = {}
        for e in events:
            if e.user_id not in hooks:
                hooks[e.user_id] = db.execute(
                    "SELECT webhook_id, events, since_position FROM webhooks WHERE user_id = ?",
                    (e.user_id,),
                ).fetchall()
            for hook in hooks[e.user_id]:
                if e.event in _event_names(hook["events"]) and hook["since_position"] < e.position:
                    created += _insert_delivery(
                        db, hook["webhook_id"], e.user_id, e.event, f"{e.event}:{e.sequence}",
                        e.sequence, e.payload, now,
                    )
        Ledger._advance_feed(db, OUTBOX_FEED, position)
        return created, []

    async def enqueue_kill_switch(self, user_id: str | None, change_id: str, payload: str, now: float) -> int:
        """A kill switch change for the webhooks subscribed to kill switches: the user's, or every
        user's (`user_id` None: the global switch). Returns how many deliveries were created."""
        return await self._ledger._write(self._enqueue_kill_switch, user_id, change_id, payload, now)

    @staticmethod
    def _enqueue_kill_switch(
        db: sqlite3.Connection, user_id: str | None, change_id: str, payload: str, now: float
    ) -> tuple[int, list[common_pb2.ExecutionUpdate]]:
        if user_id is None:
            rows = db.execute("SELECT webhook_id, user_id, events FROM webhooks").fetchall()
        else:
            rows = db.execute(
                "SELECT webhook_id, user_id, events FROM webhooks WHERE user_id = ?", (user_id,)
            ).fetchall()
        created = 0
        for hook in rows:
            if "kill_switch" in _event_names(hook["events"]):
                created += _insert_delivery(
                    db, hook["webhook_id"], hook["user_id"], "kill_switch", f"kill_switch:{change_id}",
                    0, payload, now,
                )
        return created, []

    # -- deliveries: the sender -----------------------------------------------------------------

    async def due_webhooks(self, now: float) -> list[str]:
        """Webhooks with a pending delivery due at `now`, the longest waiting first."""
        return await self._ledger._run(self._due_webhooks, now)

    def _due_webhooks(self, now: float) -> list[str]:
        rows = self._db().execute(
            "SELECT webhook_id, MIN(next_attempt_at) AS due FROM webhook_deliveries"
            " WHERE status = 'pending' AND next_attempt_at <= ? GROUP BY webhook_id ORDER BY due",
            (now,),
        ).fetchall()
        return [r["webhook_id"] for r in rows]

    async def due_deliveries(self, webhook_id: str, now: float, limit: int) -> list[DueDelivery]:
        """A webhook's pending deliveries due at `now`, oldest due first."""
        return await self._ledger._run(self._due_deliveries, webhook_id, now, limit)

    def _due_deliveries(self, webhook_id: str, now: float, limit: int) -> list[DueDelivery]:
        rows = self._db().execute(
            "SELECT d.delivery_id, d.webhook_id, d.user_id, w.url, w.secret, d.event, d.payload,"
            " d.attempts FROM webhook_deliveries d JOIN webhooks w ON w.webhook_id = d.webhook_id"
            " WHERE d.webhook_id = ? AND d.status = 'pending' AND d.next_attempt_at <= ?"
            " ORDER BY d.next_attempt_at, d.position LIMIT ?",
            (webhook_id, now, limit),
        ).fetchall()
        return [
            DueDelivery(r["delivery_id"], r["webhook_id"], r["user_id"], r["url"], r["secret"], r["event"],
                        r["payload"], r["attempts"])
            for r in rows
        ]

    async def next_due_at(self) -> float | None:
        """When the earliest pending delivery is due (None: nothing is pending)."""
        return await self._ledger._run(self._next_due_at)

    def _next_due_at(self) -> float | None:
        (due,) = self._db().execute(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'"
        ).fetchone()
        return due

    async def record_attempt(self, attempt: Attempt) -> None:
        await self._ledger._write(self._record_attempt, attempt)

    @staticmethod
    def _record_attempt(db: sqlite3.Connection, a: Attempt) -> tuple[None, list[common_pb2.ExecutionUpdate]]:
        # Still pending: a delivery deleted meanwhile (with its webhook) stays deleted.
        db.execute(
            "UPDATE webhook_deliveries SET status = ?, attempts = ?, last_error = ?,"
            " next_attempt_at = ?, delivered_at = ? WHERE delivery_id = ? AND status = 'pending'",
            (a.status, a.attempts, a.last_error, a.next_attempt_at, a.delivered_at, a.delivery_id),
        )
        return None, []

    # -- queries ------------------------------------------------------------------------------

    async def list_deliveries(
        self, user_id: str, webhook_id: str, page_size: int, after: int | None
    ) -> tuple[list[aggregator_pb2.Delivery], int | None]:
        """A page of the user's deliveries (of one webhook when `webhook_id`), newest first,
        before position `after` when given; and where the next page starts (None: no more)."""
        return await self._ledger._run(self._list_deliveries, user_id, webhook_id, page_size, after)

    def _list_deliveries(
        self, user_id: str, webhook_id: str, page_size: int, after: int | None
    ) -> tuple[list[aggregator_pb2.Delivery], int | None]:
        db = self._db()
        if webhook_id and db.execute(
            "SELECT 1 FROM webhooks WHERE webhook_id = ? AND user_id = ?", (webhook_id, user_id)
        ).fetchone() is None:
            raise _webhook_not_found(user_id, webhook_id)
        sql = "SELECT * FROM webhook_deliveries WHERE user_id = ?"
        params: list[Any] = [user_id]
        if webhook_id:
            sql += " AND webhook_id = ?"
            params.append(webhook_id)
        if after is not None:
            sql += " AND position < ?"
            params.append(after)
        rows = db.execute(sql + " ORDER BY position DESC LIMIT ?", (*params, page_size + 1)).fetchall()
        more = len(rows) > page_size
        rows = rows[:page_size]
        return [_delivery_pb(r) for r in rows], (rows[-1]["position"] if more else None)


def _webhook_not_found(user_id: str, webhook_id: str) -> ServiceError:
    return not_found(
        "WEBHOOK_NOT_FOUND", f"no webhook {webhook_id!r} for user {user_id!r}", webhook_id=webhook_id
    )
