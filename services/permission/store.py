"""The users table in SQLite; the permission service is its only writer.

All database work runs on one dedicated thread (a single-worker executor that owns the
connection), so the event loop never blocks on disk. Nothing is cached: every read goes to the
database, so an edit made by another process is seen on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, TypeVar

from services.domain.money import parse_decimal
from services.permission.permissions import RoutingPolicy, RoutingPreferences, UserPermissions

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id            TEXT PRIMARY KEY,
    enabled            INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    allowed_brokers    TEXT NOT NULL,  -- JSON array of broker names
    allowed_pairs      TEXT NOT NULL,  -- JSON array of pairs; empty means every pair
    max_order_size_usd TEXT NOT NULL,  -- plain decimal string, never a float
    created_at         TEXT NOT NULL,  -- ISO 8601 UTC
    updated_at         TEXT NOT NULL
)
"""
#: Columns added after the first schema, in the order they were added: `_migrate` adds each one
#: missing from an existing table. Every one has a default, so rows written before (or by a
#: service still running the previous version) read as "no preference".
ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("preferred_brokers", "TEXT NOT NULL DEFAULT '[]'"),  # JSON array of broker names
    ("blocked_brokers", "TEXT NOT NULL DEFAULT '[]'"),  # JSON array of broker names
    # NULL: the router's default policy.
    ("routing_policy", "TEXT CHECK (routing_policy IN ('score', 'cost'))"),
    ("max_slippage_bps", "INTEGER NOT NULL DEFAULT 0 CHECK (max_slippage_bps >= 0)"),  # 0 = no limit
)
_COLUMNS = (
    "user_id, enabled, allowed_brokers, allowed_pairs, max_order_size_usd, "
    "preferred_brokers, blocked_brokers, routing_policy, max_slippage_bps"
)
_UPSERT = f"""
INSERT INTO users ({_COLUMNS}, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET
    enabled = excluded.enabled,
    allowed_brokers = excluded.allowed_brokers,
    allowed_pairs = excluded.allowed_pairs,
    max_order_size_usd = excluded.max_order_size_usd,
    preferred_brokers = excluded.preferred_brokers,
    blocked_brokers = excluded.blocked_brokers,
    routing_policy = excluded.routing_policy,
    max_slippage_bps = excluded.max_slippage_bps,
    updated_at = excluded.updated_at
"""


class StoreNotOpen(RuntimeError):
    pass


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class UserStore:
    def __init__(self, path: str, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.path = path
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create the parent directory, the database file and the schema if missing; add the
        columns a database made by an earlier version lacks."""
        if self._executor is not None:
            raise RuntimeError(f"store {self.path} is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="permission-db")
        await self._run(self._open)

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def get(self, user_id: str) -> UserPermissions | None:
        return await self._run(self._get, user_id)

    async def list_users(self) -> list[UserPermissions]:
        return await self._run(self._list_users)

    async def upsert(self, permissions: UserPermissions) -> None:
        """Insert or replace a user's permissions; created_at is kept on update."""
        await self._run(self._upsert_many, [permissions])

    async def seed_if_empty(self, users: Sequence[UserPermissions]) -> bool:
        """Insert `users` only when the table has no rows at all; True when it did."""
        return await self._run(self._seed_if_empty, list(users))

    # Everything below runs on the store's own thread.

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreNotOpen(f"store {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        # Autocommit; multi-statement writes take the write lock explicitly (BEGIN IMMEDIATE).
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(SCHEMA)
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreNotOpen(f"store {self.path} is not open")
        return self._conn

    def _get(self, user_id: str) -> UserPermissions | None:
        row = self._db().execute(f"SELECT {_COLUMNS} FROM users WHERE user_id = ?", (user_id,)).fetchone()
        return None if row is None else _from_row(row)

    def _list_users(self) -> list[UserPermissions]:
        rows = self._db().execute(f"SELECT {_COLUMNS} FROM users ORDER BY user_id").fetchall()
        return [_from_row(row) for row in rows]

    def _upsert_many(self, users: Iterable[UserPermissions]) -> None:
        db = self._db()
        now = self._clock().isoformat()
        with _write(db):
            db.executemany(_UPSERT, [(*_to_row(user), now, now) for user in users])

    def _seed_if_empty(self, users: list[UserPermissions]) -> bool:
        db = self._db()
        now = self._clock().isoformat()
        # The write lock is held from the count to the insert: two processes starting together
        # cannot both seed.
        with _write(db):
            (count,) = db.execute("SELECT COUNT(*) FROM users").fetchone()
            if count:
                return False
            db.executemany(_UPSERT, [(*_to_row(user), now, now) for user in users])
            return True


@contextlib.contextmanager
def _write(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the body raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate(db: sqlite3.Connection) -> None:
    """Add every column of ADDED_COLUMNS the users table lacks.

    Under the write lock, so two processes opening the same old database together cannot both
    add a column (the second sees it and does nothing). SQLite DDL is transactional.
    """
    with _write(db):
        present = {row[1] for row in db.execute("PRAGMA table_info(users)")}
        for name, definition in ADDED_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE users ADD COLUMN {name} {definition}")


def _to_row(user: UserPermissions) -> tuple[Any, ...]:
    preferences = user.preferences
    policy = preferences.routing_policy
    return (
        user.user_id,
        int(user.enabled),
        json.dumps(list(user.allowed_brokers)),
        json.dumps(list(user.allowed_pairs)),
        format(user.max_order_size_usd, "f"),
        json.dumps(list(preferences.preferred_brokers)),
        json.dumps(list(preferences.blocked_brokers)),
        None if policy is None else policy.value,
        preferences.max_slippage_bps,
    )


def _from_row(row: tuple[Any, ...]) -> UserPermissions:
    user_id, enabled, brokers, pairs, max_size, preferred, blocked, policy, max_slippage = row
    return UserPermissions(
        user_id=user_id,
        enabled=bool(enabled),
        allowed_brokers=tuple(json.loads(brokers)),
        allowed_pairs=tuple(json.loads(pairs)),
        max_order_size_usd=parse_decimal(max_size, "max_order_size_usd"),
        preferences=RoutingPreferences(
            preferred_brokers=tuple(json.loads(preferred)),
            blocked_brokers=tuple(json.loads(blocked)),
            routing_policy=None if policy is None else RoutingPolicy(policy),
            max_slippage_bps=max_slippage,
        ),
    )
