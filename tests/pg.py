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
        drop_schema(schema)


def drop_schema(schema: str, lock_timeout_s: int = 30) -> None:
    """DROP SCHEMA ... CASCADE, never waiting forever: a connection the test left inside a
    transaction would hold locks the drop needs. Such a leak is a bug the test must report, so
    after `lock_timeout_s` the holders are named in the error (and ended, so the drop completes)."""
    with psycopg.connect(base_url(), autocommit=True) as conn:
        conn.execute(f"SET lock_timeout = '{lock_timeout_s}s'")
        try:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
            return
        except psycopg.errors.LockNotAvailable:
            holders = conn.execute(
                "SELECT DISTINCT a.pid, a.state, left(a.query, 200) FROM pg_locks l"
                " JOIN pg_stat_activity a ON a.pid = l.pid"
                " JOIN pg_class c ON c.oid = l.relation"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND a.pid <> pg_backend_pid()",
                (schema,),
            ).fetchall()
            for pid, _, _ in holders:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            conn.execute("SET lock_timeout = 0")
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
        raise AssertionError(f"schema {schema} was still locked after the test by {holders}")


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A database of its own on the same server, for a test that drops every connection to its
    database (nija chaos's PostgreSQL restarts); dropped after, with whatever still connects."""
    name = f"t_{uuid.uuid4().hex}"
    base = base_url()
    server, _, _db = base.rpartition("/")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
