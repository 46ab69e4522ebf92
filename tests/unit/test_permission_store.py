import dataclasses
import sqlite3
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from services.permission.demo import ALICE, BOB, DEMO_USERS
from services.permission.store import StoreNotOpen, UserStore


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "nested" / "permission.db")


@pytest.fixture
async def store(db_path: str):
    store = UserStore(db_path)
    await store.open()
    yield store
    await store.close()


async def test_open_creates_parent_dir_and_wal_database(db_path: str, store: UserStore):
    assert Path(db_path).exists()
    assert Path(db_path + "-wal").exists()
    assert await store.list_users() == []


async def test_get_unknown_user_is_none(store: UserStore):
    assert await store.get("nobody") is None


async def test_seed_once_only(db_path: str, store: UserStore):
    assert await store.seed_if_empty(DEMO_USERS) is True
    assert await store.list_users() == sorted(DEMO_USERS, key=lambda u: u.user_id)

    edited = dataclasses.replace(BOB, enabled=False, max_order_size_usd=Decimal("1"))
    await store.upsert(edited)
    assert await store.seed_if_empty(DEMO_USERS) is False
    await store.close()

    reopened = UserStore(db_path)
    await reopened.open()
    try:
        assert await reopened.seed_if_empty(DEMO_USERS) is False
        assert await reopened.get("bob") == edited
        assert len(await reopened.list_users()) == len(DEMO_USERS)
    finally:
        await reopened.close()


async def test_seed_skipped_when_any_user_exists(store: UserStore):
    await store.upsert(ALICE)
    assert await store.seed_if_empty(DEMO_USERS) is False
    assert await store.list_users() == [ALICE]


@pytest.mark.parametrize(
    "size", ["5000", "5000.00", "0.000000000000000001", "123456789012345678901234567890.5"]
)
async def test_decimal_round_trips_exactly(store: UserStore, size: str):
    user = dataclasses.replace(ALICE, max_order_size_usd=Decimal(size))
    await store.upsert(user)
    loaded = await store.get("alice")
    assert loaded == user
    assert str(loaded.max_order_size_usd) == str(Decimal(size))


async def test_upsert_replaces_and_keeps_created_at(db_path: str):
    times = iter([datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc)])
    store = UserStore(db_path, clock=lambda: next(times))
    await store.open()
    try:
        await store.upsert(ALICE)
        await store.upsert(dataclasses.replace(ALICE, allowed_pairs=("BTC-USD",)))
        assert (await store.get("alice")).allowed_pairs == ("BTC-USD",)
    finally:
        await store.close()
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT created_at, updated_at FROM users WHERE user_id = 'alice'").fetchone()
    assert row == ("2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00")


async def test_edits_from_another_connection_are_seen(db_path: str, store: UserStore):
    await store.upsert(ALICE)
    other = UserStore(db_path)
    await other.open()
    try:
        await other.upsert(dataclasses.replace(ALICE, enabled=False))
    finally:
        await other.close()
    assert (await store.get("alice")).enabled is False


async def test_calls_before_open_or_after_close_raise(db_path: str):
    store = UserStore(db_path)
    with pytest.raises(StoreNotOpen):
        await store.get("alice")
    await store.open()
    await store.close()
    with pytest.raises(StoreNotOpen):
        await store.get("alice")
    await store.close()  # idempotent
