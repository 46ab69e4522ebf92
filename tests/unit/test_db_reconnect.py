"""PostgreSQL drops every connection (a restart, a failover; `nija chaos` does it on purpose):
the ledger and the permission store answer the call that was cut off UNAVAILABLE, so its caller
retries, and connect again for the next one. Before, the ledger kept its dead connection and
failed every call until it was restarted."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from nija.common.v1 import common_pb2 as c

from services.aggregator.ledger import Ledger
from services.permission.store import UserStore
from services.runtime.errors import ServiceError
from tests import pg
from tests.unit.test_ledger import signal, update


@pytest.fixture
def database() -> Iterator[str]:
    with pg.fresh_database() as url:
        yield url


def drop_every_connection(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
    return sum(1 for (done,) in rows if done)


async def test_the_ledger_answers_unavailable_once_then_reconnects(database: str) -> None:
    ledger = await Ledger(database).open()
    try:
        await ledger.create_order(signal("before"))
        assert drop_every_connection(database) >= 1

        with pytest.raises(ServiceError) as cut:
            await ledger.create_order(signal("cut-off"))
        assert (cut.value.code.name, cut.value.reason) == ("UNAVAILABLE", "DATABASE_UNAVAILABLE")
        # The caller's retry, and everything after, go through on a new connection.
        created = await ledger.create_order(signal("cut-off"))
        assert created.created
        await ledger.record(update(c.EXECUTION_STATUS_ROUTING, "cut-off:routing:1", "cut-off", broker="kraken"))

        assert drop_every_connection(database) >= 1
        with pytest.raises(ServiceError) as cut:
            await ledger.get_order("u1", "before")  # a read is cut off the same way
        assert cut.value.reason == "DATABASE_UNAVAILABLE"
        assert (await ledger.get_order("u1", "cut-off")).status == c.EXECUTION_STATUS_ROUTING
    finally:
        await ledger.close()


async def test_the_permission_store_answers_unavailable_once_then_reconnects(database: str) -> None:
    store = UserStore(database)
    await store.open()
    try:
        assert await store.get("alice") is None
        assert drop_every_connection(database) >= 1
        with pytest.raises(ServiceError) as cut:
            await store.get("alice")
        assert (cut.value.code.name, cut.value.reason) == ("UNAVAILABLE", "DATABASE_UNAVAILABLE")
        assert await store.get("alice") is None
    finally:
        await store.close()
