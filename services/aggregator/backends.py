"""The ledger's two databases behind one small connection interface.

SQLite (a file path, the embedded default) is used through `sqlite3` directly. PostgreSQL (a
`postgresql://` URL, from NIJA_DATABASE_URL) is wrapped so the ledger's code stays the same:
`execute(sql, params)` with `?` placeholders, rows readable by index and by column name, explicit
`BEGIN` / `SAVEPOINT` / `COMMIT` (the connection is in autocommit mode so those statements are
the transaction boundaries, exactly as with SQLite's `isolation_level=None`), `in_transaction`.

The schema differs in two words only: binary columns (BLOB / BYTEA) and the insertion-order
column `rowid`, which SQLite has implicitly and PostgreSQL gets as a BIGSERIAL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def is_postgres(target: str) -> bool:
    return target.startswith(POSTGRES_PREFIXES)


def schema_words(postgres: bool) -> dict[str, str]:
    """What `{blob}` and `{rowid}` stand for in the ledger's DDL."""
    if postgres:
        return {"blob": "BYTEA", "rowid": "rowid BIGSERIAL NOT NULL,"}
    return {"blob": "BLOB", "rowid": ""}


class Row(tuple):  # type: ignore[type-arg]
    """A result row readable like sqlite3.Row: row[0] or row["column"]."""

    _names: dict[str, int]

    def __new__(cls, names: dict[str, int], values: Sequence[Any]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Any:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(names, values)


class PostgresConnection:
    """A psycopg connection that speaks the sqlite3 dialect the ledger is written in."""

    def __init__(self, url: str) -> None:
        import psycopg  # only when PostgreSQL is configured

        self._psycopg = psycopg
        self._conn = psycopg.connect(url, autocommit=True, row_factory=_row_factory)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        statement = sql.replace("BEGIN IMMEDIATE", "BEGIN").replace("?", "%s")
        return self._conn.execute(statement, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        statement = sql.replace("?", "%s")
        with self._conn.cursor() as cursor:
            cursor.executemany(statement, [tuple(row) for row in rows])

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status not in (
            self._psycopg.pq.TransactionStatus.IDLE, self._psycopg.pq.TransactionStatus.UNKNOWN
        )

    @property
    def broken(self) -> bool:
        """The server dropped the connection (a restart or failover): it must be made again."""
        return bool(self._conn.broken or self._conn.closed)

    def close(self) -> None:
        self._conn.close()


def columns(db: sqlite3.Connection | PostgresConnection, table: str) -> list[str]:
    """The table's column names."""
    if isinstance(db, PostgresConnection):
        rows = db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ?",
            (table,),
        ).fetchall()
        return [r[0] for r in rows]
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})").fetchall()]


def connect(target: str) -> sqlite3.Connection | PostgresConnection:
    if is_postgres(target):
        return PostgresConnection(target)
    db = sqlite3.connect(target, isolation_level=None)  # transactions are explicit
    db.row_factory = sqlite3.Row
    return db
