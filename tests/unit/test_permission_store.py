import asyncio
import contextlib
import dataclasses
import sqlite3
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from services.domain.brokers import BROKERS
from services.permission.demo import ALICE, BOB, DAVE, DEMO_USERS
from services.permission.permissions import MAX_SLIPPAGE_BPS, RoutingPolicy, RoutingPreferences, UserPermissions
from services.permission.store import ADDED_COLUMNS, StoreNotOpen, UserStore


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


# Routing preferences.

PREFERENCES = [
    RoutingPreferences(),
    RoutingPreferences(preferred_brokers=("kraken",)),
    RoutingPreferences(
        preferred_brokers=("binance", "kraken"),
        blocked_brokers=("alpaca", "coinbase"),
        routing_policy=RoutingPolicy.SCORE,
        max_slippage_bps=MAX_SLIPPAGE_BPS,
    ),
    RoutingPreferences(routing_policy=RoutingPolicy.COST, max_slippage_bps=50),
    RoutingPreferences(blocked_brokers=("binance",), max_slippage_bps=1),
]


@pytest.mark.parametrize("preferences", PREFERENCES)
async def test_preferences_round_trip(db_path: str, store: UserStore, preferences: RoutingPreferences):
    user = dataclasses.replace(ALICE, preferences=preferences)
    await store.upsert(user)
    assert await store.get("alice") == user
    await store.close()
    reopened = UserStore(db_path)
    await reopened.open()
    try:
        assert await reopened.get("alice") == user
    finally:
        await reopened.close()


async def test_upsert_replaces_preferences(store: UserStore):
    for preferences in [*PREFERENCES, RoutingPreferences()]:
        await store.upsert(dataclasses.replace(BOB, preferences=preferences))
        assert (await store.get("bob")).preferences == preferences


async def test_demo_users_round_trip_with_their_preferences(store: UserStore):
    await store.seed_if_empty(DEMO_USERS)
    assert (await store.get("bob")).preferences.preferred_brokers == ("kraken",)
    assert (await store.get("dave")).preferences == DAVE.preferences
    assert (await store.get("alice")).preferences == RoutingPreferences()


async def test_preferences_are_stored_in_plain_columns(db_path: str, store: UserStore):
    await store.upsert(DAVE)
    await store.upsert(dataclasses.replace(BOB, preferences=PREFERENCES[2]))
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT user_id, preferred_brokers, blocked_brokers, routing_policy, max_slippage_bps "
            "FROM users ORDER BY user_id"
        ).fetchall()
    assert rows == [
        ("bob", '["binance", "kraken"]', '["alpaca", "coinbase"]', "score", MAX_SLIPPAGE_BPS),
        ("dave", "[]", "[]", "cost", 50),
    ]


# A database made before the preferences existed: the schema and the upsert of that version, verbatim.

SCHEMA_V1 = """
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
UPSERT_V1 = """
INSERT INTO users (user_id, enabled, allowed_brokers, allowed_pairs, max_order_size_usd, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (user_id) DO UPDATE SET
    enabled = excluded.enabled,
    allowed_brokers = excluded.allowed_brokers,
    allowed_pairs = excluded.allowed_pairs,
    max_order_size_usd = excluded.max_order_size_usd,
    updated_at = excluded.updated_at
"""
V1_ROWS = [
    ("alice", 1, '["alpaca", "binance", "coinbase", "kraken"]', "[]", "50000"),
    ("dave", 1, '["coinbase"]', '["BTC-USD", "ETH-USD"]', "1000.50"),
]
V1_TIME = "2024-01-01T00:00:00+00:00"


def create_v1_database(path: str, rows=V1_ROWS) -> None:
    """A database file exactly as the version before the preferences left it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA_V1)
        conn.executemany(UPSERT_V1, [(*row, V1_TIME, V1_TIME) for row in rows])
    finally:
        conn.close()


def columns(path: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(users)")]


async def test_v1_database_is_migrated_on_open(db_path: str):
    create_v1_database(db_path)
    assert "preferred_brokers" not in columns(db_path)

    store = UserStore(db_path)
    await store.open()
    try:
        assert columns(db_path)[-4:] == [name for name, _ in ADDED_COLUMNS]
        # Old rows read as "no preference"; nothing else about them changes.
        assert await store.list_users() == [
            UserPermissions("alice", True, BROKERS, (), Decimal("50000")),
            UserPermissions("dave", True, ("coinbase",), ("BTC-USD", "ETH-USD"), Decimal("1000.50")),
        ]
        assert await store.seed_if_empty(DEMO_USERS) is False
        edited = dataclasses.replace(ALICE, preferences=PREFERENCES[2])
        await store.upsert(edited)
        assert await store.get("alice") == edited
    finally:
        await store.close()

    # Opening again finds nothing to add and keeps everything.
    again = UserStore(db_path)
    await again.open()
    try:
        assert await again.get("alice") == edited
        assert columns(db_path).count("preferred_brokers") == 1
    finally:
        await again.close()
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT created_at FROM users WHERE user_id = 'alice'").fetchone()
    assert row == (V1_TIME,)


async def test_empty_v1_database_is_migrated_and_seeded(db_path: str):
    create_v1_database(db_path, rows=[])
    store = UserStore(db_path)
    await store.open()
    try:
        assert await store.seed_if_empty(DEMO_USERS) is True
        assert await store.list_users() == sorted(DEMO_USERS, key=lambda u: u.user_id)
    finally:
        await store.close()


async def test_stores_opening_one_v1_database_together_all_succeed(db_path: str):
    create_v1_database(db_path)
    stores = [UserStore(db_path) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        for s in stores:
            assert (await s.get("dave")).preferences == RoutingPreferences()
    finally:
        for s in stores:
            await s.close()
    assert columns(db_path)[-4:] == [name for name, _ in ADDED_COLUMNS]


async def test_the_previous_version_can_still_write_a_migrated_database(db_path: str, store: UserStore):
    """A rolling deploy: the old service's upsert, run against the new schema, keeps working."""
    await store.upsert(DAVE)
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as old_writer:
        # An update leaves the preferences as they were; an insert gets "no preference".
        old_writer.execute(UPSERT_V1, ("dave", 0, '["kraken"]', "[]", "10", V1_TIME, V1_TIME))
        old_writer.execute(UPSERT_V1, ("erin", 1, '["kraken"]', "[]", "10", V1_TIME, V1_TIME))
    dave = await store.get("dave")
    assert (dave.enabled, dave.allowed_brokers, dave.preferences) == (False, ("kraken",), DAVE.preferences)
    assert (await store.get("erin")).preferences == RoutingPreferences()
