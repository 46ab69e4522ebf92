"""The PostgreSQL test harness itself: a test that leaks a transaction is told so, never hangs."""

import uuid

import psycopg
import pytest

from tests import pg


def test_a_leaked_transaction_is_reported_not_waited_for() -> None:
    schema = f"t_harness_{uuid.uuid4().hex}"
    with psycopg.connect(pg.base_url(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    leak = psycopg.connect(pg.schema_url(schema))
    try:
        leak.execute("CREATE TABLE t (x int)")
        leak.commit()
        leak.execute("SELECT * FROM t")  # a transaction left open: it holds a lock on t

        with pytest.raises(AssertionError, match=f"schema {schema} was still locked"):
            pg.drop_schema(schema, lock_timeout_s=1)

        with psycopg.connect(pg.base_url()) as conn:  # and the schema is gone all the same
            left = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchall()
        assert left == []
    finally:
        leak.close()
