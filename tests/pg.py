"""PostgreSQL for the tests: a fresh schema per test in the CI server's `test` database.

The server (DESIGN.md, Storage) listens on 127.0.0.1:5432 with trust auth; which role exists
depends on the machine (postgres, or the login user), so the first that connects is used.
NIJA_TEST_POSTGRES overrides the server part of the URL. PostgreSQL is required, never skipped.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Iterator

import psycopg

SERVER = os.environ.get("NIJA_TEST_POSTGRES", "127.0.0.1:5432/test")
ROLES = ("postgres", "root")


@functools.cache
def base_url() -> str:
    """postgresql://<role>@<SERVER>, for the first role that connects."""
    failures = []
    for role in ROLES:
        url = f"postgresql://{role}@{SERVER}"
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return url
        except psycopg.OperationalError as exc:
            failures.append(f"{role}: {str(exc).strip()}")
    raise RuntimeError(f"PostgreSQL is required for these tests; cannot connect to {SERVER}: {failures}")


def schema_url(schema: str) -> str:
    """A URL whose connections see `schema` first (search_path): tables land there."""
    return f"{base_url()}?options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """Create schema t_<hex>, yield a URL that uses it, drop it (and everything in it) after."""
    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(base_url(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(schema)
    finally:
        with psycopg.connect(base_url(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
