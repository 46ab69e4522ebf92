"""One small database layer over two backends: a SQLite file (the embedded default) or PostgreSQL.

SQL is written once, with `?` placeholders; the PostgreSQL backend turns them into `%s`. The
dialects differ only where `dialect` and `blob_type` say so; everything else the store writes
(`INSERT ... ON CONFLICT`, row values, plain types) means the same on both.

Every statement runs inside `transaction()` (or `run()`, which retries it): an idle connection
never holds a lock or a snapshot, so another process can always migrate or write. A connection is
not thread-safe; the owner uses it from one thread only (the store's single worker thread).

Writers are serialized per user: SQLite's `BEGIN IMMEDIATE` takes the database's write lock (one
writer at a time, across processes), PostgreSQL's `lock_user` takes that user's row lock. Either
way a read-check-write for one user (reserve against limits) cannot interleave with another.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from services.runtime.errors import ServiceError

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = tuple[Any, ...]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: PostgreSQL transactions that fail on a serialization failure or a deadlock are run again.
RETRIES = 5
#: Seconds SQLite waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 10.0


def open_database(target: str) -> Database:
    """A postgresql:// (or postgres://) URL is PostgreSQL; anything else is a SQLite file path."""
    if target.startswith(POSTGRES_SCHEMES):
        return PostgresDatabase(target)
    return SqliteDatabase(target)


class Database(abc.ABC):
    #: "sqlite" or "postgresql".
    dialect: str
    #: The column type for bytes.
    blob_type: str

    def __init__(self) -> None:
        self._in_transaction = False

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[None]:
        """Commit when the body returns, roll back when it raises. Not re-entrant.

        `write=False` is for reads: on SQLite it does not take the write lock (and its reads see one
        snapshot); on PostgreSQL it is an ordinary READ COMMITTED transaction.
        """
        if self._in_transaction:
            raise RuntimeError("transaction() is not re-entrant")
        self._begin(write)
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._in_transaction = False
            self._rollback()
            raise
        self._in_transaction = False
        self._commit()

    def run(self, fn: Callable[[], T], *, write: bool = True) -> T:
        """`fn()` inside one transaction, run again (a few times) when the database says to retry.

        `fn` must have no effect outside the database, since it may run more than once.
        """
        for attempt in range(1, RETRIES + 1):
            try:
                with self.transaction(write=write):
                    return fn()
            except Exception as exc:
                if self.broken:  # the next transaction reconnects; this one's caller may retry
                    raise ServiceError(grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE",
                                       "the connection to the database was lost; retry") from exc
                if attempt == RETRIES or not self._retryable(exc):
                    raise
                log.warning("transaction retried", extra={"attempt": attempt, "error": str(exc)})
                time.sleep(0.005 * 2**attempt)
        raise AssertionError("unreachable")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        return self._cursor(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._check_in_transaction()
        self._executemany(self._sql(sql), [tuple(row) for row in rows])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(row) for row in self._cursor(sql, params).fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row = self._cursor(sql, params).fetchone()
        return None if row is None else tuple(row)

    @property
    def broken(self) -> bool:
        """The connection to the server is lost (PostgreSQL only; a SQLite file cannot be)."""
        return False

    @abc.abstractmethod
    def lock_user(self, user_id: str) -> None:
        """Hold the user's row until the transaction ends: that user's writers go one at a time."""

    @abc.abstractmethod
    def lock_migrations(self) -> None:
        """Hold the migration lock until the transaction ends: one process migrates at a time."""

    @abc.abstractmethod
    def columns(self, table: str) -> list[str]:
        """The table's column names in order (empty when there is no such table)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def _cursor(self, sql: str, params: Sequence[Any]) -> Any:
        self._check_in_transaction()
        return self._execute(self._sql(sql), tuple(params))

    def _check_in_transaction(self) -> None:
        if not self._in_transaction:
            raise RuntimeError("statements run inside transaction() only")

    def _sql(self, sql: str) -> str:
        return sql

    @abc.abstractmethod
    def _execute(self, sql: str, params: tuple[Any, ...]) -> Any: ...

    @abc.abstractmethod
    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...

    @abc.abstractmethod
    def _begin(self, write: bool) -> None: ...

    @abc.abstractmethod
    def _commit(self) -> None: ...

    @abc.abstractmethod
    def _rollback(self) -> None: ...

    def _retryable(self, exc: Exception) -> bool:
        return False


class SqliteDatabase(Database):
    dialect = "sqlite"
    blob_type = "BLOB"

    def __init__(self, path: str) -> None:
        super().__init__()
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        # Autocommit at the driver level: transactions are explicit BEGIN ... COMMIT.
        conn = sqlite3.connect(path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            _set_wal(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def lock_user(self, user_id: str) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the whole database's write lock."""

    def lock_migrations(self) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the whole database's write lock."""

    def columns(self, table: str) -> list[str]:
        return [row[1] for row in self.query(f"PRAGMA table_info({table})")]

    def close(self) -> None:
        self._conn.close()

    def _execute(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self._conn.execute(sql, params)

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(sql, rows)

    def _begin(self, write: bool) -> None:
        # IMMEDIATE takes the write lock up front, so a read-check-write cannot be overtaken by
        # another writer between its read and its write (and never fails to upgrade later).
        self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch a new file to WAL. The switch needs the file to itself and SQLite does not wait for
    it (no busy handler), so when several processes create the file at once, retry for a while."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class PostgresDatabase(Database):
    dialect = "postgresql"
    blob_type = "BYTEA"

    def __init__(self, url: str) -> None:
        super().__init__()
        import psycopg  # only needed when a PostgreSQL URL is configured

        self._psycopg = psycopg
        self._url = url
        self._conn = self._connect()

    @property
    def broken(self) -> bool:
        return bool(self._conn.broken or self._conn.closed)

    def lock_user(self, user_id: str) -> None:
        self.execute("SELECT user_id FROM users WHERE user_id = ? FOR UPDATE", (user_id,))

    def lock_migrations(self) -> None:
        # Keyed by schema: databases that share a server (tests: one schema each) do not wait
        # on each other. Taken before the first CREATE TABLE IF NOT EXISTS, which is not safe
        # to race in PostgreSQL.
        self.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.schema_migrations'))")

    def columns(self, table: str) -> list[str]:
        rows = self.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return [row[0] for row in rows]

    def close(self) -> None:
        self._conn.close()

    def _connect(self) -> Any:
        # autocommit off: the first statement opens a transaction, commit() or rollback() ends it.
        return self._psycopg.connect(self._url, autocommit=False)

    def _sql(self, sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def _execute(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self._conn.execute(sql, params)

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(sql, rows)

    def _begin(self, write: bool) -> None:
        if self.broken:
            # The server went away (restart, failover): the next transaction gets a new connection.
            log.warning("reconnecting to PostgreSQL after a broken connection")
            self._conn = self._connect()

    def _commit(self) -> None:
        self._conn.commit()

    def _rollback(self) -> None:
        if not self.broken:
            self._conn.rollback()

    def _retryable(self, exc: Exception) -> bool:
        errors = self._psycopg.errors
        return isinstance(exc, (errors.SerializationFailure, errors.DeadlockDetected))


# Versioned migrations.


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    description: str
    #: Runs inside the migration transaction, once per database.
    apply: Callable[[Database], None]


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TEXT NOT NULL  -- ISO 8601 UTC
)
"""


def migrate(db: Database, migrations: Sequence[Migration], applied_at: str) -> list[int]:
    """Apply, in order, every migration the database has not recorded; the versions applied.

    One transaction under the migration lock: two processes opening the same database together
    cannot both apply a version, and a failed migration leaves nothing half-done (DDL is
    transactional on both backends). Versions the database has and this code does not know
    (a newer release wrote them) are left alone: schema changes only ever add.
    """
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"migration versions must be unique and ascending, got {versions}")
    applied: list[int] = []

    def apply_missing() -> None:
        applied.clear()
        db.lock_migrations()
        db.execute(MIGRATIONS_TABLE)
        done = {row[0] for row in db.query("SELECT version FROM schema_migrations")}
        for migration in migrations:
            if migration.version in done:
                continue
            migration.apply(db)
            db.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, applied_at),
            )
            applied.append(migration.version)

    db.run(apply_missing)
    if applied:
        log.info("database migrated", extra={"dialect": db.dialect, "versions": applied})
    return applied
