import asyncio
import contextlib
import dataclasses
import sqlite3
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from services.domain.allocation import Allocation, Rule
from services.domain.brokers import BROKERS
from services.permission import store as store_module
from services.permission.db import Migration, migrate, open_database
from services.permission.demo import ALICE, BOB, DAVE, DEMO_USERS
from services.permission.permissions import (
    MAX_SLIPPAGE_BPS,
    ApiKeyInfo,
    BadPermissions,
    KillSwitches,
    RiskLimits,
    RoutingPolicy,
    RoutingPreferences,
    SealedSecret,
    TokenRecord,
    UserPermissions,
)
from services.permission.store import (
    ALLOCATION_COLUMNS,
    KILL_SWITCH_COLUMNS,
    LIMIT_COLUMNS,
    MIGRATIONS,
    PREFERENCE_COLUMNS,
    StoreNotOpen,
    UnknownUser,
    UserStore,
)
from tests import pg
from tests.unit.test_risk import Clock

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A SQLite file in a directory that does not exist yet."""
    return str(tmp_path / "nested" / "permission.db")


@pytest.fixture
async def store(database_url: str):
    store = UserStore(database_url, clock=Clock(T0))
    await store.open()
    yield store
    await store.close()


def rows(target: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the database directly, on either backend, the way another process would."""
    db = open_database(target)
    try:
        with db.transaction(write=False):
            return db.query(sql, params)
    finally:
        db.close()


# Opening and migrating.


async def test_open_creates_parent_dir_and_wal_database(db_path: str):
    store = UserStore(db_path)
    await store.open()
    try:
        assert Path(db_path).exists()
        assert Path(db_path + "-wal").exists()
        assert await store.list_users() == []
    finally:
        await store.close()


async def test_a_fresh_database_gets_every_migration_once(database_url: str, store: UserStore):
    recorded = rows(database_url, "SELECT version, description, applied_at FROM schema_migrations ORDER BY version")
    assert recorded == [(m.version, m.description, T0.isoformat()) for m in MIGRATIONS]
    assert [v for v, *_ in recorded] == [1, 2, 3, 4]
    await store.close()
    again = UserStore(database_url, clock=Clock(T0 + timedelta(days=1)))
    await again.open()
    await again.close()
    assert rows(database_url, "SELECT version, applied_at FROM schema_migrations ORDER BY version") == [
        (1, T0.isoformat()),
        (2, T0.isoformat()),
        (3, T0.isoformat()),
        (4, T0.isoformat()),
    ]
    db = open_database(database_url)
    try:
        with db.transaction(write=False):
            users = db.columns("users")
    finally:
        db.close()
    assert users[:5] == ["user_id", "enabled", "allowed_brokers", "allowed_pairs", "max_order_size_usd"]
    assert users[7:] == [name for name, _ in (*PREFERENCE_COLUMNS, *LIMIT_COLUMNS, *KILL_SWITCH_COLUMNS)]


async def test_stores_opening_one_new_database_together_all_succeed(database_url: str):
    stores = [UserStore(database_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await stores[0].upsert(ALICE)
        for s in stores:
            assert await s.get("alice") == ALICE
    finally:
        for s in stores:
            await s.close()
    assert rows(database_url, "SELECT version FROM schema_migrations ORDER BY version") == [(1,), (2,), (3,), (4,)]


async def test_a_failed_migration_leaves_nothing_behind(database_url: str):
    def broken(db) -> None:  # type: ignore[no-untyped-def]
        db.execute("CREATE TABLE half_done (x INTEGER)")
        db.execute("INSERT INTO no_such_table VALUES (1)")

    db = open_database(database_url)
    try:
        good = Migration(1, "one table", lambda d: d.execute("CREATE TABLE t1 (x INTEGER)"))
        with pytest.raises(Exception):
            migrate(db, [good, Migration(2, "broken", broken)], T0.isoformat())
        with db.transaction(write=False):
            assert db.columns("t1") == [] and db.columns("half_done") == []
            assert db.columns("schema_migrations") == []
        assert migrate(db, [good], T0.isoformat()) == [1]
        assert migrate(db, [good], T0.isoformat()) == []
        with pytest.raises(ValueError, match="ascending"):
            migrate(db, [good, good], T0.isoformat())
    finally:
        db.close()


async def test_the_database_layer_refuses_statements_outside_a_transaction(database_url: str):
    db = open_database(database_url)
    try:
        with pytest.raises(RuntimeError, match="inside transaction"):
            db.query("SELECT 1")
        with db.transaction(write=False):
            # One SQL text for both backends: `?` placeholders, a literal % left alone.
            assert db.one("SELECT ?, '100%'", ("x",)) == ("x", "100%")
            with pytest.raises(RuntimeError, match="re-entrant"):
                with db.transaction():
                    pass
    finally:
        db.close()


def test_postgres_serialization_failures_and_deadlocks_are_retried():
    """PostgreSQL only: SQLite never reports them (BEGIN IMMEDIATE serializes writers)."""
    with pg.fresh_schema() as url:
        _check_retries(url)


def _check_retries(url: str) -> None:
    db = open_database(url)
    try:
        failures = [psycopg.errors.SerializationFailure("retry me"), psycopg.errors.DeadlockDetected("and me")]
        calls = []

        def flaky() -> int:
            calls.append(1)
            db.execute("CREATE TABLE IF NOT EXISTS attempts (n INTEGER)")
            db.execute("INSERT INTO attempts VALUES (?)", (len(calls),))
            if failures:
                raise failures.pop(0)
            return len(calls)

        assert db.run(flaky) == 3
        # The failed attempts were rolled back: only the third one's row is there.
        assert db.run(lambda: db.query("SELECT n FROM attempts"), write=False) == [(3,)]
        with pytest.raises(ValueError):
            db.run(lambda: (_ for _ in ()).throw(ValueError("not retried")))
    finally:
        db.close()


async def test_calls_before_open_or_after_close_raise(database_url: str):
    store = UserStore(database_url)
    with pytest.raises(StoreNotOpen):
        await store.get("alice")
    await store.open()
    await store.close()
    with pytest.raises(StoreNotOpen):
        await store.get("alice")
    await store.close()  # idempotent


# Users.


async def test_get_unknown_user_is_none(store: UserStore):
    assert await store.get("nobody") is None


async def test_seed_once_only(database_url: str, store: UserStore):
    assert await store.seed_if_empty(DEMO_USERS) is True
    assert await store.list_users() == sorted(DEMO_USERS, key=lambda u: u.user_id)

    edited = dataclasses.replace(BOB, enabled=False, max_order_size_usd=Decimal("1"))
    await store.upsert(edited)
    assert await store.seed_if_empty(DEMO_USERS) is False
    await store.close()

    reopened = UserStore(database_url)
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


async def test_upsert_replaces_and_keeps_created_at(database_url: str):
    clock = Clock(datetime(2024, 1, 1, tzinfo=timezone.utc))
    store = UserStore(database_url, clock=clock)
    await store.open()
    try:
        await store.upsert(ALICE)
        clock.advance(24 * 3600)
        await store.upsert(dataclasses.replace(ALICE, allowed_pairs=("BTC-USD",)))
        assert (await store.get("alice")).allowed_pairs == ("BTC-USD",)
    finally:
        await store.close()
    assert rows(database_url, "SELECT created_at, updated_at FROM users WHERE user_id = 'alice'") == [
        ("2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00")
    ]


async def test_edits_from_another_connection_are_seen(database_url: str, store: UserStore):
    await store.upsert(ALICE)
    other = UserStore(database_url)
    await other.open()
    try:
        await other.upsert(dataclasses.replace(ALICE, enabled=False))
    finally:
        await other.close()
    assert (await store.get("alice")).enabled is False


LIMITS = [
    RiskLimits(),
    RiskLimits(max_position_usd=Decimal("25000.5")),
    RiskLimits(
        max_position_usd=Decimal("0.000000000000000001"),
        max_open_positions=3,
        max_daily_notional_usd=Decimal("123456789012345678901234567890"),
        max_daily_loss_usd=Decimal("999.99"),
        trades_per_second=Decimal("0.25"),
        trade_burst=20,
    ),
]


@pytest.mark.parametrize("limits", LIMITS)
async def test_limits_round_trip_through_upsert_and_set_limits(store: UserStore, limits: RiskLimits):
    await store.upsert(dataclasses.replace(ALICE, limits=limits))
    assert (await store.get("alice")).limits == limits
    await store.set_limits("alice", RiskLimits(max_open_positions=1))
    assert await store.get("alice") == dataclasses.replace(ALICE, limits=RiskLimits(max_open_positions=1))
    await store.set_limits("alice", limits)
    assert (await store.get("alice")).limits == limits


async def test_set_limits_and_set_enabled_need_a_known_user(store: UserStore):
    await store.upsert(BOB)
    await store.set_enabled("bob", False)
    assert await store.get("bob") == dataclasses.replace(BOB, enabled=False)
    with pytest.raises(UnknownUser):
        await store.set_enabled("mallory", True)
    with pytest.raises(UnknownUser):
        await store.set_limits("mallory", RiskLimits())
    with pytest.raises(BadPermissions):
        await store.set_enabled("bob", 1)  # type: ignore[arg-type]


# Kill switches.


async def test_kill_switches_global_and_per_user(store: UserStore):
    await store.seed_if_empty(DEMO_USERS)
    assert await store.kill_switches() == KillSwitches()
    await store.set_kill_switch(None, True, "exchange outage")
    await store.set_kill_switch("bob", True, "fat finger")
    await store.set_kill_switch("dave", True, "margin call")
    assert await store.kill_switches() == KillSwitches(
        True, "exchange outage", {"bob": "fat finger", "dave": "margin call"}
    )
    await store.set_kill_switch("bob", False, "checked")
    await store.set_kill_switch(None, False, "resolved")
    switches = await store.kill_switches()
    assert (switches.global_on, dict(switches.users)) == (False, {"dave": "margin call"})
    # upsert is about permissions: it never touches a kill switch.
    await store.upsert(DAVE)
    assert dict((await store.kill_switches()).users) == {"dave": "margin call"}


async def test_a_kill_switch_needs_a_reason_and_a_known_user(store: UserStore):
    await store.upsert(ALICE)
    with pytest.raises(ValueError, match="reason"):
        await store.set_kill_switch(None, True, " ")
    with pytest.raises(UnknownUser):
        await store.set_kill_switch("mallory", True, "why")
    await store.set_kill_switch("alice", False, "")  # off needs no reason


# Tokens.


def token(token_id: str = "tok-1", subject: str = "alice", kind: str = "user", **changes: Any) -> TokenRecord:
    fields: dict[str, Any] = dict(
        token_id=token_id, kind=kind, subject=subject, secret_hash="sha256:ab12", description="laptop", created_at=T0
    )
    fields.update(changes)
    return TokenRecord(**fields)


async def test_tokens_add_get_list_revoke(store: UserStore):
    records = [token("tok-1"), token("tok-2", "momentum-v2", "strategy"), token("tok-3", "router", "service")]
    for record in records:
        assert await store.add_token(record) is True
    assert await store.add_token(token("tok-1", description="someone else's")) is False
    assert await store.get_token("tok-1") == records[0]
    assert await store.get_token("nope") is None
    assert await store.list_tokens() == records
    assert await store.list_tokens("momentum-v2") == [records[1]]

    at = T0 + timedelta(hours=1)
    assert await store.revoke_token("tok-1", at) is True
    assert await store.revoke_token("tok-1", at + timedelta(hours=1)) is False  # the first time stays
    assert await store.revoke_token("nope", at) is False
    revoked = await store.get_token("tok-1")
    assert revoked == dataclasses.replace(records[0], revoked_at=at) and revoked.revoked


@pytest.mark.parametrize(
    "changes",
    [
        {"token_id": ""},
        {"kind": "root"},
        {"subject": "bad subject"},
        {"secret_hash": ""},
        {"created_at": datetime(2024, 1, 1)},
        {"revoked_at": "yesterday"},
    ],
)
def test_malformed_tokens_are_refused(changes: dict[str, Any]):
    with pytest.raises(BadPermissions):
        token(**changes)


# Strategy subscriptions.


async def test_subscriptions(store: UserStore):
    await store.seed_if_empty(DEMO_USERS)
    assert await store.subscribers("momentum") == ()
    await store.set_subscription("momentum", "dave", True)
    await store.set_subscription("momentum", "alice", True)
    await store.set_subscription("momentum", "alice", True)  # idempotent
    await store.set_subscription("mean-revert", "bob", True)
    assert await store.subscribers("momentum") == ("alice", "dave")
    await store.set_subscription("momentum", "dave", False)
    await store.set_subscription("momentum", "dave", False)
    assert await store.subscribers("momentum") == ("alice",)
    assert await store.subscribers("mean-revert") == ("bob",)
    with pytest.raises(UnknownUser):
        await store.set_subscription("momentum", "mallory", True)


FIXED = Allocation(Rule.FIXED_USD, Decimal("250.50"), max_order_usd=Decimal("200"))
PERCENT = Allocation(Rule.PERCENT_OF_CAPITAL, Decimal("2.5"), capital_usd=Decimal("10000.01"))
HALF = Allocation(Rule.MULTIPLIER, Decimal("0.5"), pairs=frozenset({"ETH-USD", "BTC-USD"}))


async def test_subscriptions_keep_their_allocations_exactly(database_url: str, store: UserStore):
    await store.seed_if_empty(DEMO_USERS)
    await store.set_subscription("momentum", "dave", True, FIXED)
    await store.set_subscription("momentum", "alice", True, PERCENT)
    await store.set_subscription("carry", "alice", True, HALF)
    await store.set_subscription("carry", "bob", True)  # no allocation: multiplier 1
    assert await store.list_subscriptions() == [
        ("carry", "alice", HALF),
        ("carry", "bob", Allocation()),
        ("momentum", "alice", PERCENT),
        ("momentum", "dave", FIXED),
    ]
    # Plain decimal text, never a float; pairs as a sorted JSON array.
    columns = ", ".join(name for name, _ in ALLOCATION_COLUMNS)
    momentum = f"SELECT {columns} FROM subscriptions WHERE strategy_id = 'momentum' ORDER BY user_id"
    assert rows(database_url, momentum) == [
        ("percent_of_capital", "2.5", "10000.01", None, "[]"),
        ("fixed_usd", "250.50", None, "200", "[]"),
    ]
    assert rows(database_url, "SELECT pairs FROM subscriptions WHERE strategy_id = 'carry' AND user_id = 'alice'") == [
        ('["BTC-USD", "ETH-USD"]',)
    ]


async def test_subscribing_again_replaces_the_allocation_and_keeps_created_at(database_url: str):
    clock = Clock(T0)
    store = UserStore(database_url, clock=clock)
    await store.open()
    try:
        await store.upsert(ALICE)
        await store.set_subscription("momentum", "alice", True, FIXED)
        clock.advance(60)
        await store.set_subscription("momentum", "alice", True, HALF)
        assert await store.list_subscriptions("momentum") == [("momentum", "alice", HALF)]
        await store.set_subscription("momentum", "alice", True)
        assert await store.list_subscriptions("momentum") == [("momentum", "alice", Allocation())]
        assert rows(database_url, "SELECT created_at FROM subscriptions") == [(T0.isoformat(),)]
        await store.set_subscription("momentum", "alice", False, FIXED)  # the allocation goes too
        assert await store.list_subscriptions() == []
        with pytest.raises(TypeError):
            await store.set_subscription("momentum", "alice", True, "x2")  # type: ignore[arg-type]
        with pytest.raises(UnknownUser):
            await store.set_subscription("momentum", "mallory", True, FIXED)
        assert await store.list_subscriptions() == []
    finally:
        await store.close()


async def test_list_subscriptions_by_strategy_by_user_and_both(store: UserStore):
    await store.seed_if_empty(DEMO_USERS)
    for strategy, user in [("b", "dave"), ("a", "dave"), ("a", "bob"), ("c", "alice")]:
        await store.set_subscription(strategy, user, True)

    def pairs(listed: list[tuple[str, str, Allocation]]) -> list[tuple[str, str]]:
        return [(strategy, user) for strategy, user, _ in listed]

    assert pairs(await store.list_subscriptions()) == [("a", "bob"), ("a", "dave"), ("b", "dave"), ("c", "alice")]
    assert pairs(await store.list_subscriptions("a")) == [("a", "bob"), ("a", "dave")]
    assert pairs(await store.list_subscriptions(user_id="dave")) == [("a", "dave"), ("b", "dave")]
    assert pairs(await store.list_subscriptions("b", "dave")) == [("b", "dave")]
    assert await store.list_subscriptions("b", "bob") == []
    assert await store.list_subscriptions("nobody") == []
    # The authenticator's view of a strategy still agrees.
    assert await store.subscribers("a") == ("bob", "dave")


async def test_a_strategy_with_10000_subscribers_is_listed_in_one_query(database_url: str, store: UserStore):
    users = [f"u{i:05}" for i in range(10_000)]
    db = open_database(database_url)
    queries: list[str] = []
    try:
        with db.transaction():
            db.executemany(
                "INSERT INTO subscriptions (strategy_id, user_id, created_at, rule, amount) VALUES (?, ?, ?, ?, ?)",
                [("big", u, T0.isoformat(), "fixed_usd", "10") for u in reversed(users)],
            )
        query = db.query

        def counted(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
            queries.append(sql)
            return query(sql, params)

        db.query = counted  # type: ignore[method-assign]
        with db.transaction(write=False):
            listed = store_module._list_subscriptions(db, "big", None)
    finally:
        db.close()
    assert len(queries) == 1
    assert [user for _, user, _ in listed] == users
    assert {allocation for _, _, allocation in listed} == {Allocation(Rule.FIXED_USD, Decimal(10))}
    assert len(await store.list_subscriptions("big")) == 10_000


async def test_subscriptions_from_before_allocations_read_as_multiplier_one(database_url: str):
    """A database the previous release wrote (migrations 1 and 2): its subscriptions keep
    trading the strategy's own size."""
    db = open_database(database_url)
    try:
        migrate(db, MIGRATIONS[:2], T0.isoformat())
        with db.transaction():
            db.execute(
                "INSERT INTO users (user_id, enabled, allowed_brokers, allowed_pairs, max_order_size_usd, "
                "created_at, updated_at) VALUES ('alice', 1, '[]', '[]', '100', ?, ?)",
                (T0.isoformat(), T0.isoformat()),
            )
            db.execute(
                "INSERT INTO subscriptions (strategy_id, user_id, created_at) VALUES ('momentum', 'alice', ?)",
                (T0.isoformat(),),
            )
            assert "rule" not in db.columns("subscriptions")
    finally:
        db.close()
    store = UserStore(database_url, clock=Clock(T0))
    await store.open()
    try:
        assert rows(database_url, "SELECT version FROM schema_migrations ORDER BY version") == [(1,), (2,), (3,), (4,)]
        assert await store.list_subscriptions() == [("momentum", "alice", Allocation(Rule.MULTIPLIER, Decimal(1)))]
        assert await store.subscribers("momentum") == ("alice",)
        await store.set_subscription("momentum", "alice", True, FIXED)
        assert await store.list_subscriptions("momentum", "alice") == [("momentum", "alice", FIXED)]
    finally:
        await store.close()


async def test_trade_view_reads_permissions_and_key_brokers_together(store: UserStore):
    await store.seed_if_empty(DEMO_USERS)
    assert await store.trade_view("mallory") is None
    assert await store.trade_view("alice") == (ALICE, ())
    await store.put_api_key("alice", "kraken", SealedSecret("mk-1", b"k"))
    await store.put_api_key("alice", "binance", SealedSecret("mk-1", b"b"))
    await store.put_api_key("bob", "coinbase", SealedSecret("mk-1", b"c"))
    assert await store.trade_view("alice") == (ALICE, ("binance", "kraken"))


# Sealed API keys.


async def test_api_keys_are_stored_as_sealed_bytes(database_url: str, store: UserStore):
    await store.seed_if_empty(DEMO_USERS)
    sealed = SealedSecret("mk-1", b"\x00\x01sealed\xff" * 10)
    await store.put_api_key("alice", "kraken", sealed)
    await store.put_api_key("alice", "coinbase", SealedSecret("mk-1", b"other"))
    assert await store.get_api_key("alice", "kraken") == sealed
    assert await store.get_api_key("alice", "binance") is None
    assert await store.get_api_key("bob", "kraken") is None
    assert await store.list_api_keys("alice") == [
        ApiKeyInfo("alice", "coinbase", "mk-1", T0),
        ApiKeyInfo("alice", "kraken", "mk-1", T0),
    ]
    replaced = SealedSecret("mk-2", b"new")
    await store.put_api_key("alice", "kraken", replaced)
    assert await store.get_api_key("alice", "kraken") == replaced
    assert rows(database_url, "SELECT blob FROM api_keys WHERE broker = 'kraken'")[0][0] == b"new"
    assert await store.delete_api_key("alice", "kraken") is True
    assert await store.delete_api_key("alice", "kraken") is False
    assert [i.broker for i in await store.list_api_keys("alice")] == ["coinbase"]


async def test_api_keys_need_a_known_user_and_broker(store: UserStore):
    await store.upsert(ALICE)
    with pytest.raises(UnknownUser):
        await store.put_api_key("mallory", "kraken", SealedSecret("mk-1", b"x"))
    with pytest.raises(BadPermissions, match="unknown broker"):
        await store.put_api_key("alice", "ftx", SealedSecret("mk-1", b"x"))
    with pytest.raises(BadPermissions):
        SealedSecret("", b"x")
    with pytest.raises(BadPermissions):
        SealedSecret("mk-1", "not bytes")  # type: ignore[arg-type]
    assert "secret" not in repr(SealedSecret("mk-1", b"secret"))


async def test_reseal_moves_every_key_in_batches_with_reads_in_between(store: UserStore):
    users = [dataclasses.replace(ALICE, user_id=f"u{i:02}") for i in range(7)]
    for user in users:
        await store.upsert(user)
        for broker in ("kraken", "binance"):
            await store.put_api_key(user.user_id, broker, SealedSecret("old", f"{user.user_id}/{broker}".encode()))
    await store.put_api_key("u03", "coinbase", SealedSecret("new", b"already new"))
    seen: list[tuple[str, str]] = []
    reads_between: list[SealedSecret | None] = []

    def reseal(user_id: str, broker: str, sealed: SealedSecret) -> SealedSecret | None:
        seen.append((user_id, broker))
        if sealed.key_id == "new":
            return None
        return SealedSecret("new", sealed.blob[::-1])

    async def reader() -> None:
        for _ in range(20):
            reads_between.append(await store.get_api_key("u00", "kraken"))
            await asyncio.sleep(0)

    changed, _ = await asyncio.gather(store.reseal_api_keys(reseal, batch=4), reader())
    assert changed == 14
    assert len(seen) == 15 and seen == sorted(seen)
    for user in users:
        for broker in ("kraken", "binance"):
            assert await store.get_api_key(user.user_id, broker) == SealedSecret(
                "new", f"{user.user_id}/{broker}".encode()[::-1]
            )
    assert await store.get_api_key("u03", "coinbase") == SealedSecret("new", b"already new")
    assert all(r is not None for r in reads_between)
    assert await store.reseal_api_keys(reseal) == 0


async def test_reseal_never_overwrites_a_key_written_meanwhile(store: UserStore):
    await store.upsert(ALICE)
    await store.put_api_key("alice", "kraken", SealedSecret("old", b"v1"))
    fresh = SealedSecret("new", b"v2 written by the user during the rotation")

    def reseal(user_id: str, broker: str, sealed: SealedSecret) -> SealedSecret:
        # The user replaces the key while the rotation holds the old bytes.
        db = open_database(store.target)
        try:
            with db.transaction():
                db.execute("UPDATE api_keys SET key_id = ?, blob = ? WHERE user_id = 'alice'", (fresh.key_id, fresh.blob))
        finally:
            db.close()
        return SealedSecret("new", b"resealed v1")

    assert await store.reseal_api_keys(reseal) == 0
    assert await store.get_api_key("alice", "kraken") == fresh


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
async def test_preferences_round_trip(database_url: str, store: UserStore, preferences: RoutingPreferences):
    user = dataclasses.replace(ALICE, preferences=preferences)
    await store.upsert(user)
    assert await store.get("alice") == user
    await store.close()
    reopened = UserStore(database_url)
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


async def test_preferences_are_stored_in_plain_columns(database_url: str, store: UserStore):
    await store.upsert(DAVE)
    await store.upsert(dataclasses.replace(BOB, preferences=PREFERENCES[2]))
    assert rows(
        database_url,
        "SELECT user_id, preferred_brokers, blocked_brokers, routing_policy, max_slippage_bps "
        "FROM users ORDER BY user_id",
    ) == [
        ("bob", '["binance", "kraken"]', '["alpaca", "coinbase"]', "score", MAX_SLIPPAGE_BPS),
        ("dave", "[]", "[]", "cost", 50),
    ]


# SQLite files made before migrations were recorded: the schema and the upsert of those
# versions, verbatim. v1: before the preferences; "preferences": the release that added them.

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
#: The columns the preferences release added with ALTER TABLE, verbatim.
PREFERENCES_RELEASE_COLUMNS = (
    ("preferred_brokers", "TEXT NOT NULL DEFAULT '[]'"),
    ("blocked_brokers", "TEXT NOT NULL DEFAULT '[]'"),
    ("routing_policy", "TEXT CHECK (routing_policy IN ('score', 'cost'))"),
    ("max_slippage_bps", "INTEGER NOT NULL DEFAULT 0 CHECK (max_slippage_bps >= 0)"),
)


def create_v1_database(path: str, rows=V1_ROWS, preferences: bool = False) -> None:
    """A database file exactly as the version before the preferences left it (or, with
    `preferences`, as the release that added them left it: still no schema_migrations)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA_V1)
        conn.executemany(UPSERT_V1, [(*row, V1_TIME, V1_TIME) for row in rows])
        if preferences:
            for name, definition in PREFERENCES_RELEASE_COLUMNS:
                conn.execute(f"ALTER TABLE users ADD COLUMN {name} {definition}")
            conn.execute("UPDATE users SET preferred_brokers = '[\"coinbase\"]' WHERE user_id = 'dave'")
    finally:
        conn.close()


def columns(path: str, table: str = "users") -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def versions(path: str) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


async def test_v1_database_is_adopted_on_open(db_path: str):
    create_v1_database(db_path)
    assert "preferred_brokers" not in columns(db_path)
    assert columns(db_path, "schema_migrations") == []

    store = UserStore(db_path)
    await store.open()
    try:
        assert columns(db_path)[7:11] == [name for name, _ in PREFERENCE_COLUMNS]
        assert versions(db_path) == [1, 2, 3, 4]
        # Old rows read as "no preference" and no limits beyond the seed's rate; nothing else changes.
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

    # Opening again finds nothing to do and keeps everything.
    again = UserStore(db_path)
    await again.open()
    try:
        assert await again.get("alice") == edited
        assert columns(db_path).count("preferred_brokers") == 1
        assert versions(db_path) == [1, 2, 3, 4]
    finally:
        await again.close()
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT created_at FROM users WHERE user_id = 'alice'").fetchone()
    assert row == (V1_TIME,)


async def test_a_database_from_the_preferences_release_is_adopted(db_path: str):
    create_v1_database(db_path, preferences=True)
    store = UserStore(db_path)
    await store.open()
    try:
        assert versions(db_path) == [1, 2, 3, 4]
        assert (await store.get("dave")).preferences == RoutingPreferences(preferred_brokers=("coinbase",))
        assert columns(db_path).count("preferred_brokers") == 1
    finally:
        await store.close()


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
    assert columns(db_path)[7:11] == [name for name, _ in PREFERENCE_COLUMNS]
    assert versions(db_path) == [1, 2, 3, 4]


async def test_the_previous_version_can_still_write_a_migrated_database(db_path: str):
    """A rolling deploy: the old service's upsert, run against the new schema, keeps working."""
    store = UserStore(db_path)
    await store.open()
    try:
        limited = dataclasses.replace(DAVE, limits=RiskLimits(max_open_positions=2))
        await store.upsert(limited)
        with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as old_writer:
            # An update leaves the preferences and limits as they were; an insert gets the defaults.
            old_writer.execute(UPSERT_V1, ("dave", 0, '["kraken"]', "[]", "10", V1_TIME, V1_TIME))
            old_writer.execute(UPSERT_V1, ("erin", 1, '["kraken"]', "[]", "10", V1_TIME, V1_TIME))
        dave = await store.get("dave")
        assert (dave.enabled, dave.allowed_brokers, dave.preferences, dave.limits) == (
            False,
            ("kraken",),
            DAVE.preferences,
            limited.limits,
        )
        erin = await store.get("erin")
        assert (erin.preferences, erin.limits) == (RoutingPreferences(), RiskLimits())
    finally:
        await store.close()
