"""Reading the ledger's database from a test, whichever backend it is on (a second connection,
as another process would)."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from services.aggregator.app import Config
from services.aggregator.backends import is_postgres


def rows(target: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if is_postgres(target):
        with psycopg.connect(target) as conn:
            return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), params).fetchall()]
    db = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def ledger_config(database_url: str, **values: object) -> Config:
    """The aggregator on the given backend: a SQLite path, or a postgresql:// URL."""
    key = "database_url" if is_postgres(database_url) else "database_path"
    return Config(**{key: database_url}, **values)  # type: ignore[arg-type]
