"""The permission service's state: users, limits, kill switches, tokens, subscriptions, sealed API
keys, positions and exposure reservations. The permission service is its only writer.

The database is a SQLite file (the embedded default) or PostgreSQL (a postgresql:// URL); see
services.permission.db. All database work runs on one dedicated thread (a single-worker executor
that owns the connection), so the event loop never blocks on disk or network. Nothing is cached:
every call reads the database, so what another process (another replica) wrote is seen at once.
(A user's row is parsed once per distinct content, and reserve reads the user's open reservations
as sums kept in the database itself, see OPEN_TOTALS_TABLE: neither can go stale.)

Each public method is one transaction. This file only reads and writes; what is allowed and what a
fill does are decided by the pure modules (checks, risk, positions), called inside the transaction
so that the state they decide on cannot change before the decision is written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext
from typing import Any, TypeVar

from services.domain.allocation import Allocation, Rule
from services.domain.brokers import BROKERS
from services.domain.money import ZERO, parse_decimal
from services.domain.signal import Side
from services.permission.checks import (
    Decision,
    TradeRequest,
    allowed_decision,
    check_trade,
    kill_switch_denial,
)
from services.permission.db import Database, Migration, migrate, open_database
from services.permission.permissions import (
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
from services.permission.positions import EXACT, ExecutionEvent, Position, apply_fill
from services.permission.positions import (
    FillEvent as FillEvent,  # re-exported: apply_execution's input
)
from services.permission.risk import (
    Bucket,
    Exposure,
    OpenReservation,
    OpenTotals,
    check_risk,
    rate_limited,
    take,
)

T = TypeVar("T")


class StoreNotOpen(RuntimeError):
    pass


class UnknownUser(LookupError):
    """A call that acts on a user named one the store does not have."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id} not found")
        self.user_id = user_id


@dataclasses.dataclass(frozen=True)
class Reservation:
    """The answer to reserve: the decision, and whether the signal had been reserved before."""

    decision: Decision
    #: True: this signal_id was reserved earlier; nothing new was reserved or checked.
    replayed: bool = False
    #: When allowed: the brokers the user has API keys stored for (sorted), read in the same
    #: transaction as the decision.
    api_key_brokers: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class AppliedExecution:
    #: Fills applied by this call (fills applied before are skipped).
    new_fills: int
    #: The pair's position after the call.
    position: Position
    #: What the new fills realized, gross of fees.
    realized_pnl: Decimal


# The schema. Decimals are TEXT (plain decimal strings, never floats); times are ISO 8601 UTC TEXT.

#: Version 1 is the users table of the first release plus the columns added before migrations
#: were recorded. A database made by those releases is adopted: whichever of these columns it
#: lacks are added, its rows kept. Every one has a default, so rows written before (or by the
#: previous release, during a rolling deploy) read as "no preference".
PREFERENCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("preferred_brokers", "TEXT NOT NULL DEFAULT '[]'"),  # JSON array of broker names
    ("blocked_brokers", "TEXT NOT NULL DEFAULT '[]'"),  # JSON array of broker names
    # NULL: the router's default policy.
    ("routing_policy", "TEXT CHECK (routing_policy IN ('score', 'cost'))"),
    ("max_slippage_bps", "INTEGER NOT NULL DEFAULT 0 CHECK (max_slippage_bps >= 0)"),  # 0 = no limit
)
USERS_TABLE = """
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

#: Version 2 adds these to users (defaults: no limit, the seed's 1 trade per second)...
LIMIT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("max_position_usd", "TEXT"),  # NULL: no limit
    ("max_open_positions", "INTEGER CHECK (max_open_positions >= 1)"),
    ("max_daily_notional_usd", "TEXT"),
    ("max_daily_loss_usd", "TEXT"),
    ("trades_per_second", "TEXT NOT NULL DEFAULT '1'"),
    ("trade_burst", "INTEGER NOT NULL DEFAULT 1 CHECK (trade_burst >= 1)"),
)
#: ...and the user's kill switch (set on its own, never by upsert)...
KILL_SWITCH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("kill_on", "INTEGER NOT NULL DEFAULT 0 CHECK (kill_on IN (0, 1))"),
    ("kill_reason", "TEXT NOT NULL DEFAULT ''"),
)
#: ...and these tables. {blob} is the dialect's bytes type.
RISK_TABLES = (
    """CREATE TABLE rate_buckets (
        user_id TEXT PRIMARY KEY,
        tokens  TEXT NOT NULL,
        at      TEXT NOT NULL  -- seconds since the epoch, repr() of a float
    )""",
    # One row: the global kill switch.
    """CREATE TABLE controls (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        kill_on     INTEGER NOT NULL CHECK (kill_on IN (0, 1)),
        kill_reason TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    )""",
    "INSERT INTO controls (id, kill_on, kill_reason, updated_at) VALUES (1, 0, '', '')",
    """CREATE TABLE tokens (
        token_id    TEXT PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('user', 'strategy', 'admin', 'service')),
        subject     TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        revoked_at  TEXT
    )""",
    "CREATE INDEX tokens_by_subject ON tokens (subject)",
    """CREATE TABLE subscriptions (
        strategy_id TEXT NOT NULL,
        user_id     TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (strategy_id, user_id)
    )""",
    """CREATE TABLE api_keys (
        user_id    TEXT NOT NULL,
        broker     TEXT NOT NULL,
        key_id     TEXT NOT NULL,   -- the master key that sealed blob
        blob       {blob} NOT NULL, -- sealed elsewhere; never the plain key
        updated_at TEXT NOT NULL,
        PRIMARY KEY (user_id, broker)
    )""",
    """CREATE TABLE positions (
        user_id      TEXT NOT NULL,
        pair         TEXT NOT NULL,
        quantity     TEXT NOT NULL,
        cost_basis   TEXT NOT NULL,
        realized_pnl TEXT NOT NULL,
        fees         TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (user_id, pair)
    )""",
    """CREATE TABLE applied_fills (
        user_id        TEXT NOT NULL,
        fill_key       TEXT NOT NULL,
        reservation_id TEXT NOT NULL,
        applied_at     TEXT NOT NULL,
        PRIMARY KEY (user_id, fill_key)
    )""",
    """CREATE TABLE reservations (
        user_id      TEXT NOT NULL,
        signal_id    TEXT NOT NULL,
        pair         TEXT NOT NULL,
        side         TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
        reserved_usd TEXT NOT NULL,
        filled_usd   TEXT NOT NULL,
        -- released: given back unused by the router; expired: never reached the ledger
        status       TEXT NOT NULL CHECK (status IN ('open', 'done', 'released', 'expired')),
        -- 1 once the ledger has reported the order (its feed), so it cannot be an orphan
        confirmed    INTEGER NOT NULL DEFAULT 0 CHECK (confirmed IN (0, 1)),
        day          TEXT NOT NULL,  -- UTC date it was reserved
        created_at   TEXT NOT NULL,
        closed_at    TEXT,
        PRIMARY KEY (user_id, signal_id)
    )""",
    "CREATE INDEX reservations_by_status ON reservations (user_id, status)",
    """CREATE TABLE daily (
        user_id      TEXT NOT NULL,
        day          TEXT NOT NULL,  -- UTC date
        traded_usd   TEXT NOT NULL,
        realized_pnl TEXT NOT NULL,
        fees         TEXT NOT NULL,
        PRIMARY KEY (user_id, day)
    )""",
)


#: Version 3 gives each subscription its allocation (services.domain.allocation). Rows from
#: before read as the strategy's own size: multiplier 1, no cap, every pair.
ALLOCATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rule", "TEXT NOT NULL DEFAULT 'multiplier' CHECK (rule IN ('fixed_usd', 'percent_of_capital', 'multiplier'))"),
    ("amount", "TEXT NOT NULL DEFAULT '1'"),  # plain decimal string: USD, percent or multiplier
    ("capital_usd", "TEXT"),  # percent_of_capital only
    ("max_order_usd", "TEXT"),  # NULL: no cap
    ("pairs", "TEXT NOT NULL DEFAULT '[]'"),  # JSON array of pairs; empty means every pair
)


#: Version 4 keeps each user's open reservations summed (risk.OpenTotals) in one row, so that a
#: reserve reads one row however many of them are open. Every writer of reservations in this
#: release keeps the sums in the same transaction. `changes` counts every change to a user's
#: reservations rows and is kept by triggers, whoever writes: sums stored at another count than
#: the current one were not kept by that writer (the previous release during a rolling deploy, an
#: operator's SQL) and are summed again from the rows.
OPEN_TOTALS_TABLE = """
CREATE TABLE open_totals (
    user_id   TEXT PRIMARY KEY,
    changes   INTEGER NOT NULL DEFAULT 0,  -- reservations rows of the user changed (by the triggers)
    totals    TEXT,                        -- JSON [[pair, side, remaining_usd, count], ...]
    totals_at INTEGER                      -- the `changes` the totals are right at
)
"""
#: The columns the sums depend on (a change of `confirmed` alone changes no sum).
_SUMMED_COLUMNS = "status, reserved_usd, filled_usd, pair, side"
_SQLITE_TRIGGER = """
CREATE TRIGGER reservations_{name} AFTER {event} ON reservations BEGIN
    INSERT OR IGNORE INTO open_totals (user_id) VALUES ({row}.user_id);
    UPDATE open_totals SET changes = changes + 1 WHERE user_id = {row}.user_id;
END
"""
_POSTGRES_TRIGGER = (
    """
    CREATE FUNCTION reservations_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        changed_user TEXT;
    BEGIN
        IF TG_OP = 'DELETE' THEN changed_user := OLD.user_id; ELSE changed_user := NEW.user_id; END IF;
        INSERT INTO open_totals (user_id, changes) VALUES (changed_user, 1)
            ON CONFLICT (user_id) DO UPDATE SET changes = open_totals.changes + 1;
        RETURN NULL;
    END
    $$""",
    f"""
    CREATE TRIGGER reservations_changed AFTER INSERT OR DELETE OR UPDATE OF {_SUMMED_COLUMNS}
        ON reservations FOR EACH ROW EXECUTE FUNCTION reservations_changed()""",
)


def _v1_users(db: Database) -> None:
    db.execute(USERS_TABLE)
    present = set(db.columns("users"))
    for name, definition in PREFERENCE_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE users ADD COLUMN {name} {definition}")


def _v2_risk(db: Database) -> None:
    for name, definition in (*LIMIT_COLUMNS, *KILL_SWITCH_COLUMNS):
        db.execute(f"ALTER TABLE users ADD COLUMN {name} {definition}")
    for statement in RISK_TABLES:
        db.execute(statement.format(blob=db.blob_type))


def _v3_allocations(db: Database) -> None:
    for name, definition in ALLOCATION_COLUMNS:
        db.execute(f"ALTER TABLE subscriptions ADD COLUMN {name} {definition}")
    # ListSubscriptions by user; by strategy, the primary key serves.
    db.execute("CREATE INDEX subscriptions_by_user ON subscriptions (user_id, strategy_id)")


def _v4_open_totals(db: Database) -> None:
    db.execute(OPEN_TOTALS_TABLE)
    if db.dialect == "sqlite":
        for name, event, row in (
            ("inserted", "INSERT", "NEW"),
            ("updated", f"UPDATE OF {_SUMMED_COLUMNS}", "NEW"),
            ("deleted", "DELETE", "OLD"),
        ):
            db.execute(_SQLITE_TRIGGER.format(name=name, event=event, row=row))
    else:
        for statement in _POSTGRES_TRIGGER:
            db.execute(statement)
    # Orphans (open, never confirmed) are looked for on every reserve: found without reading the
    # user's other open reservations.
    db.execute(
        "CREATE INDEX reservations_unconfirmed ON reservations (user_id, created_at) "
        "WHERE status = 'open' AND confirmed = 0"
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "users with routing preferences", _v1_users),
    Migration(
        2,
        "risk limits, rate buckets, kill switches, tokens, subscriptions, API keys, positions, "
        "reservations, daily figures",
        _v2_risk,
    ),
    Migration(3, "subscription allocations", _v3_allocations),
    Migration(4, "open reservations summed per user", _v4_open_totals),
)

_USER_FIELDS = (
    "user_id",
    "enabled",
    "allowed_brokers",
    "allowed_pairs",
    "max_order_size_usd",
    *(name for name, _ in PREFERENCE_COLUMNS),
    *(name for name, _ in LIMIT_COLUMNS),
)
_COLUMNS = ", ".join(_USER_FIELDS)
_UPSERT = (
    f"INSERT INTO users ({_COLUMNS}, created_at, updated_at) "
    f"VALUES ({', '.join('?' * (len(_USER_FIELDS) + 2))}) "
    "ON CONFLICT (user_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in (*_USER_FIELDS[1:], "updated_at"))
)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class UserStore:
    def __init__(
        self, target: str, *, clock: Callable[[], datetime] = _utc_now, unconfirmed_ttl_s: float = 60.0
    ) -> None:
        """`target`: a SQLite file path, or a postgresql:// URL. `clock`: timezone-aware UTC now.
        `unconfirmed_ttl_s`: a reservation the ledger has not reported within this long is an
        orphan (its router stopped between reserving and recording the order) and expires."""
        self.target = target
        self._clock = clock
        self._unconfirmed_ttl = timedelta(seconds=unconfirmed_ttl_s)
        self._executor: ThreadPoolExecutor | None = None
        self._db: Database | None = None
        # Reads (tokens, users, keys, positions) on a connection and thread of their own, so a
        # burst of reservations queued for the writer never holds up authenticating a caller.
        self._reader: ThreadPoolExecutor | None = None
        self._read_db: Database | None = None

    async def open(self) -> None:
        """Connect (SQLite: create the parent directory and the file) and apply the migrations
        the database lacks. Safe when several processes open the same database at once."""
        if self._executor is not None:
            raise RuntimeError(f"store {self.target} is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="permission-db")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="permission-db-read")

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            if self._reader is not None:
                await asyncio.get_running_loop().run_in_executor(self._reader, self._close_reader)
                self._reader.shutdown(wait=True)
                self._reader = None
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    # Users.

    async def get(self, user_id: str) -> UserPermissions | None:
        return await self._tx(_get_user, user_id, write=False)

    async def list_users(self) -> list[UserPermissions]:
        return await self._tx(_list_users, write=False)

    async def upsert(self, permissions: UserPermissions) -> None:
        """Insert or replace a user's permissions and limits; created_at and the kill switch are kept."""
        await self._tx(self._upsert_many, [permissions])

    async def seed_if_empty(self, users: Sequence[UserPermissions]) -> bool:
        """Insert `users` only when the table has no rows at all; True when it did."""
        return await self._tx(self._seed_if_empty, list(users))

    async def set_limits(self, user_id: str, limits: RiskLimits) -> None:
        if not isinstance(limits, RiskLimits):
            raise BadPermissions(f"limits must be RiskLimits, got {limits!r}")
        await self._tx(self._update_user, user_id, _limits_to_columns(limits))

    async def set_enabled(self, user_id: str, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise BadPermissions(f"enabled must be a bool, got {enabled!r}")
        await self._tx(self._update_user, user_id, {"enabled": int(enabled)})

    # Kill switches.

    async def set_kill_switch(self, user_id: str | None, on: bool, reason: str) -> None:
        """Turn a user's kill switch (None: the global one) on or off. Turning one on needs a reason."""
        if not isinstance(on, bool):
            raise ValueError(f"on must be a bool, got {on!r}")
        if not isinstance(reason, str) or (on and not reason.strip()):
            raise ValueError("a kill switch is turned on with a reason")
        if user_id is None:
            await self._tx(self._set_global_kill, on, reason)
        else:
            await self._tx(self._update_user, user_id, {"kill_on": int(on), "kill_reason": reason})

    async def kill_switches(self) -> KillSwitches:
        return await self._tx(_kill_switches, write=False)

    async def controls(self) -> tuple[KillSwitches, str]:
        """The kill switches and the API keys' version (see api_keys_version), in one read."""
        return await self._tx(lambda db: (_kill_switches(db), _api_keys_version(db)), write=False)

    # Reservations, fills, positions.

    async def reserve(self, request: TradeRequest) -> Reservation:
        """Check a trade and, when allowed, reserve its size against the user's limits, atomically.

        In order, the first that fails decides: the global kill switch, the user's kill switch, the
        static check (checks.check_trade), the user's rate limit, the risk limits (risk.check_risk).
        A signal_id reserved before is a replay: allowed with the user's current brokers and
        preferences, and nothing is reserved, checked or counted again. Raises UnknownUser.
        """
        if not request.signal_id:
            raise ValueError("reserve needs the request's signal_id")
        return await self._tx(self._reserve, request)

    async def release(self, user_id: str, signal_id: str) -> bool:
        """An open reservation no longer counts (the trade never went out). True when this call
        released it; False when there was nothing open to release."""
        return await self._tx(self._release, user_id, signal_id)

    async def apply_execution(self, event: ExecutionEvent) -> AppliedExecution:
        """Apply the fills not applied before (by fill_key), exactly once, to the position, today's
        figures and the reservation; a terminal event closes the reservation."""
        return await self._tx(self._apply_execution, event)

    async def apply_executions(self, events: Sequence[ExecutionEvent]) -> list[AppliedExecution]:
        """apply_execution for each event, in order, in one transaction: all or nothing. A fill
        that appears twice (in the batch, or applied before) is applied once."""
        return await self._tx(self._apply_executions, list(events))

    async def positions(self, user_id: str) -> list[Position]:
        """Every pair the user ever traded (flat ones too: they carry the realized pnl), by pair."""
        return await self._tx(_positions, user_id, write=False)

    def today(self) -> str:
        """The UTC date the daily figures are kept under now."""
        return _day(self._clock())

    async def exposure(self, user_id: str) -> Exposure:
        """Positions, open reservations and today's (UTC) figures, as reserve sees them."""
        return await self._tx(lambda db: _exposure(db, user_id, _day(self._clock())), write=False)

    async def open_reservations(self, user_id: str) -> list[OpenReservation]:
        return await self._tx(_open_reservations, user_id, write=False)

    # Tokens.

    async def add_token(self, token: TokenRecord) -> bool:
        """False when a token with that id exists already (it is left as it was)."""
        if not isinstance(token, TokenRecord):
            raise TypeError(f"add_token takes a TokenRecord, got {token!r}")
        return await self._tx(_add_token, token)

    async def get_token(self, token_id: str) -> TokenRecord | None:
        return await self._tx(_get_token, token_id, write=False)

    async def list_tokens(self, subject: str | None = None) -> list[TokenRecord]:
        return await self._tx(_list_tokens, subject, write=False)

    async def revoke_token(self, token_id: str, at: datetime) -> bool:
        """True when this call revoked it; False when unknown or revoked before (the first time stays)."""
        return await self._tx(_revoke_token, token_id, at)

    # Strategy subscriptions.

    async def set_subscription(
        self, strategy_id: str, user_id: str, subscribed: bool, allocation: Allocation | None = None
    ) -> None:
        """Subscribe with `allocation` (None: multiplier 1), replacing any earlier one, or
        unsubscribe. Raises UnknownUser."""
        if allocation is not None and not isinstance(allocation, Allocation):
            raise TypeError(f"set_subscription takes an Allocation, got {allocation!r}")
        await self._tx(self._set_subscription, strategy_id, user_id, subscribed, allocation or Allocation())

    async def subscribers(self, strategy_id: str) -> tuple[str, ...]:
        return await self._tx(_subscribers, strategy_id, write=False)

    async def list_subscriptions(
        self, strategy_id: str | None = None, user_id: str | None = None
    ) -> list[tuple[str, str, Allocation]]:
        """(strategy_id, user_id, allocation) by strategy then user, filtered by either or both;
        one query, however many subscribers a strategy has."""
        return await self._tx(_list_subscriptions, strategy_id, user_id, write=False)

    async def trade_view(self, user_id: str) -> tuple[UserPermissions, tuple[str, ...]] | None:
        """A user's permissions and the brokers they have API keys for, from one read (None:
        no such user): a check's answer never mixes two moments."""
        return await self._tx(_trade_view, user_id, write=False)

    # Sealed API keys.

    async def put_api_key(self, user_id: str, broker: str, secret: SealedSecret) -> None:
        if broker not in BROKERS:
            raise BadPermissions(f"unknown broker {broker!r}; known: {list(BROKERS)}")
        if not isinstance(secret, SealedSecret):
            raise TypeError(f"put_api_key takes a SealedSecret, got {secret!r}")
        await self._tx(self._put_api_key, user_id, broker, secret)

    async def get_api_key(self, user_id: str, broker: str) -> SealedSecret | None:
        return await self._tx(_get_api_key, user_id, broker, write=False)

    async def list_api_keys(self, user_id: str) -> list[ApiKeyInfo]:
        return await self._tx(_list_api_keys, user_id, write=False)

    async def delete_api_key(self, user_id: str, broker: str) -> bool:
        return await self._tx(_delete_api_key, user_id, broker)

    async def reseal_api_keys(
        self, fn: Callable[[str, str, SealedSecret], SealedSecret | None], batch: int = 100
    ) -> int:
        """Replace every stored key by `fn(user_id, broker, sealed)` (None: leave it); how many changed.

        Key rotation without downtime: `batch` keys at a time, each batch its own short
        transaction, and `fn` runs outside any transaction; other calls go on between batches. A
        key written meanwhile (put_api_key) is not overwritten: the update applies only to the
        sealed bytes `fn` was given. Batches done before `fn` raises stay done; run it again.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        changed = 0
        after = ("", "")
        while True:
            rows = await self._tx(_api_key_batch, after, batch, write=False)
            if rows:
                changed += await self._run(self._reseal_batch, rows, fn)
                after = rows[-1][:2]
            if len(rows) < batch:
                return changed

    # Everything below runs on the store's own thread.

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreNotOpen(f"store {self.target} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _tx(self, fn: Callable[..., T], *args: Any, write: bool = True) -> T:
        """`fn(db, *args)` in one transaction on the store's thread (retried when PostgreSQL asks)."""

        if not write and self._reader is not None:
            return await asyncio.get_running_loop().run_in_executor(self._reader, self._read_job, fn, args)

        def job() -> T:
            db = self._database()
            return db.run(lambda: fn(db, *args), write=write)

        return await self._run(job)

    def _read_job(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._executor is None:
            raise StoreNotOpen(f"store {self.target} is not open")
        if self._read_db is None:  # made on the reader thread, which alone uses it
            self._read_db = open_database(self.target)
        db = self._read_db
        return db.run(lambda: fn(db, *args), write=False)

    def _close_reader(self) -> None:
        if self._read_db is not None:
            self._read_db.close()
            self._read_db = None

    def _open(self) -> None:
        db = open_database(self.target)
        try:
            migrate(db, MIGRATIONS, self._clock().isoformat())
        except BaseException:
            db.close()
            raise
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _database(self) -> Database:
        if self._db is None:
            raise StoreNotOpen(f"store {self.target} is not open")
        return self._db

    def _upsert_many(self, db: Database, users: Iterable[UserPermissions]) -> None:
        now = self._clock().isoformat()
        db.executemany(_UPSERT, [(*_user_to_row(user), now, now) for user in users])

    def _seed_if_empty(self, db: Database, users: list[UserPermissions]) -> bool:
        # In one write transaction: two processes starting together cannot both seed.
        (count,) = db.one("SELECT COUNT(*) FROM users") or (0,)
        if count:
            return False
        self._upsert_many(db, users)
        return True

    def _update_user(self, db: Database, user_id: str, values: dict[str, Any]) -> None:
        assignments = ", ".join(f"{name} = ?" for name in values)
        changed = db.execute(
            f"UPDATE users SET {assignments}, updated_at = ? WHERE user_id = ?",
            (*values.values(), self._clock().isoformat(), user_id),
        )
        if not changed:
            raise UnknownUser(user_id)

    def _set_global_kill(self, db: Database, on: bool, reason: str) -> None:
        db.execute(
            "UPDATE controls SET kill_on = ?, kill_reason = ?, updated_at = ? WHERE id = 1",
            (int(on), reason, self._clock().isoformat()),
        )

    def _reserve(self, db: Database, request: TradeRequest) -> Reservation:
        now = self._clock()
        user_id = request.user_id
        # Every writer of this user's exposure takes this lock first: what is read below cannot
        # change until the reservation is written.
        db.lock_user(user_id)
        row = db.one(f"SELECT {_COLUMNS}, kill_on, kill_reason FROM users WHERE user_id = ?", (user_id,))
        if row is None:
            raise UnknownUser(user_id)
        permissions = _user_from_row(row[:-2])
        kill_on, kill_reason = row[-2:]
        reserved = db.one(
            "SELECT status FROM reservations WHERE user_id = ? AND signal_id = ?", (user_id, request.signal_id)
        )
        if reserved is not None and reserved[0] in ("open", "done"):
            # The signal was reserved and sent on before: a resubmission, which trades nothing new.
            return Reservation(
                allowed_decision(permissions), replayed=True, api_key_brokers=_api_key_brokers(db, user_id)
            )
        totals, kept = _open_totals(db, user_id)  # before any change to the user's reservations below
        if reserved is not None:
            # Given back without trading (released by the router, or expired as an orphan):
            # checked again like a new one, or a resubmission would trade outside every limit.
            db.execute("DELETE FROM reservations WHERE user_id = ? AND signal_id = ?", (user_id, request.signal_id))
        # Orphans stop counting: reserved, then never reported by the ledger.
        expired = _expire_orphans(db, user_id, now, now - self._unconfirmed_ttl)
        for pair, side, remaining in expired:
            totals = totals.plus(pair, side, -remaining, -1)
        reservation = self._decide(db, request, permissions, kill_on, kill_reason, totals, now)
        if reservation.decision.allowed:
            totals = totals.plus(request.pair, request.side, request.size_usd)
        if reservation.decision.allowed or expired or reserved is not None or not kept:
            _save_open_totals(db, user_id, totals)
        return reservation

    def _decide(
        self, db: Database, request: TradeRequest, permissions: UserPermissions, kill_on: int, kill_reason: str,
        totals: OpenTotals, now: datetime,
    ) -> Reservation:
        """The checks in order (see reserve); when all pass, the rate token and the reservation are
        written."""
        user_id = request.user_id
        global_on, global_reason = db.one("SELECT kill_on, kill_reason FROM controls WHERE id = 1") or (0, "")
        switches = KillSwitches(bool(global_on), global_reason, {user_id: kill_reason} if kill_on else {})
        killed = kill_switch_denial(switches, user_id)
        if killed is not None:
            return Reservation(killed)
        decision = check_trade(permissions, request)
        if not decision.allowed:
            return Reservation(decision)
        limits = permissions.limits
        allowed, bucket = take(_bucket(db, user_id), limits.trades_per_second, limits.trade_burst, now.timestamp())
        if not allowed:
            return Reservation(rate_limited(user_id, limits))
        day = _day(now)
        exposure = _exposure(db, user_id, day, totals)
        denial = check_risk(limits, exposure, request.pair, request.side, request.size_usd)
        if denial is not None:
            return Reservation(denial)

        # Allowed: only now is the rate token spent and the size reserved.
        db.execute(
            "INSERT INTO rate_buckets (user_id, tokens, at) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
            (user_id, _text(bucket.tokens), repr(bucket.at)),
        )
        db.execute(
            "INSERT INTO reservations (user_id, signal_id, pair, side, reserved_usd, filled_usd, "
            "status, day, created_at) VALUES (?, ?, ?, ?, ?, '0', 'open', ?, ?)",
            (
                user_id,
                request.signal_id,
                request.pair,
                request.side.value,
                _text(request.size_usd),
                day,
                now.isoformat(),
            ),
        )
        return Reservation(decision, api_key_brokers=_api_key_brokers(db, user_id))

    def _release(self, db: Database, user_id: str, signal_id: str) -> bool:
        db.lock_user(user_id)
        totals, _ = _open_totals(db, user_id)
        held = _open_part(db, user_id, signal_id)
        if held is None:
            return False  # nothing open to release (unknown, or over already)
        db.execute(
            "UPDATE reservations SET status = 'released', closed_at = ? "
            "WHERE user_id = ? AND signal_id = ? AND status = 'open'",
            (self._clock().isoformat(), user_id, signal_id),
        )
        _save_open_totals(db, user_id, totals.plus(held[0], held[1], -held[2], -1))
        return True

    def _apply_executions(self, db: Database, events: list[ExecutionEvent]) -> list[AppliedExecution]:
        # Every user's lock up front, in one order: two batches over the same users cannot
        # deadlock on PostgreSQL (each event takes its user's lock again, which it already holds).
        for user_id in sorted({event.user_id for event in events}):
            db.lock_user(user_id)
        return [self._apply_execution(db, event) for event in events]

    def _apply_execution(self, db: Database, event: ExecutionEvent) -> AppliedExecution:
        now = self._clock()
        user_id, pair = event.user_id, event.pair
        db.lock_user(user_id)
        position = _position(db, user_id, pair) or Position(pair)
        new_fills = 0
        realized = traded = fees = ZERO
        with localcontext(EXACT):
            for fill in event.fills:
                first_time = db.execute(
                    "INSERT INTO applied_fills (user_id, fill_key, reservation_id, applied_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (user_id, fill_key) DO NOTHING",
                    (user_id, fill.fill_key, event.reservation_id, now.isoformat()),
                )
                if not first_time:
                    continue
                position, delta = apply_fill(position, event.side, fill.price, fill.quantity, fill.fee)
                new_fills += 1
                realized += delta
                traded += fill.price * fill.quantity
                fees += fill.fee
        # Any report of the order from the ledger confirms its reservation (it is no orphan).
        db.execute(
            "UPDATE reservations SET confirmed = 1 WHERE user_id = ? AND signal_id = ? AND confirmed = 0",
            (user_id, event.reservation_id),
        )
        if new_fills or event.terminal:
            # What the reservation counts for in the user's open totals, before and after.
            totals, _ = _open_totals(db, user_id)
            before = _open_part(db, user_id, event.reservation_id)
            if new_fills:
                _save_position(db, user_id, position, now)
                _add_to_day(db, user_id, _day(now), traded, realized, fees)
                _add_to_reservation(db, user_id, event.reservation_id, traded)
            if event.terminal:
                db.execute(
                    "UPDATE reservations SET status = 'done', closed_at = ? "
                    "WHERE user_id = ? AND signal_id = ? AND status = 'open'",
                    (now.isoformat(), user_id, event.reservation_id),
                )
            after = _open_part(db, user_id, event.reservation_id)
            if before is not None:
                totals = totals.plus(before[0], before[1], -before[2], -1)
            if after is not None:
                totals = totals.plus(*after)
            _save_open_totals(db, user_id, totals)
        return AppliedExecution(new_fills=new_fills, position=position, realized_pnl=realized)

    def _set_subscription(
        self, db: Database, strategy_id: str, user_id: str, subscribed: bool, allocation: Allocation
    ) -> None:
        if db.one("SELECT 1 FROM users WHERE user_id = ?", (user_id,)) is None:
            raise UnknownUser(user_id)
        if subscribed:
            # Subscribing again replaces the allocation; created_at stays the first subscription's.
            db.execute(
                f"INSERT INTO subscriptions (strategy_id, user_id, created_at, {_ALLOCATION_COLUMNS}) "
                f"VALUES (?, ?, ?, {', '.join('?' * len(ALLOCATION_COLUMNS))}) "
                "ON CONFLICT (strategy_id, user_id) DO UPDATE SET "
                + ", ".join(f"{name} = excluded.{name}" for name, _ in ALLOCATION_COLUMNS),
                (strategy_id, user_id, self._clock().isoformat(), *_allocation_to_row(allocation)),
            )
        else:
            db.execute(
                "DELETE FROM subscriptions WHERE strategy_id = ? AND user_id = ?", (strategy_id, user_id)
            )

    def _put_api_key(self, db: Database, user_id: str, broker: str, secret: SealedSecret) -> None:
        if db.one("SELECT 1 FROM users WHERE user_id = ?", (user_id,)) is None:
            raise UnknownUser(user_id)
        db.execute(
            "INSERT INTO api_keys (user_id, broker, key_id, blob, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (user_id, broker) DO UPDATE SET key_id = excluded.key_id, blob = excluded.blob, "
            "updated_at = excluded.updated_at",
            (user_id, broker, secret.key_id, secret.blob, self._clock().isoformat()),
        )

    def _reseal_batch(
        self, rows: list[tuple[str, str, SealedSecret]], fn: Callable[[str, str, SealedSecret], SealedSecret | None]
    ) -> int:
        # fn (which may call out to a key service) runs before the transaction, not inside it.
        updates = []
        for user_id, broker, old in rows:
            new = fn(user_id, broker, old)
            if new is not None and new != old:
                updates.append((user_id, broker, old, new))
        if not updates:
            return 0
        db = self._database()
        now = self._clock().isoformat()

        def write() -> int:
            changed = 0
            for user_id, broker, old, new in updates:
                changed += db.execute(
                    "UPDATE api_keys SET key_id = ?, blob = ?, updated_at = ? "
                    "WHERE user_id = ? AND broker = ? AND key_id = ? AND blob = ?",
                    (new.key_id, new.blob, now, user_id, broker, old.key_id, old.blob),
                )
            return changed

        return db.run(write)


# Reads and writes that need no clock. Each takes the open transaction's database.


def _get_user(db: Database, user_id: str) -> UserPermissions | None:
    row = db.one(f"SELECT {_COLUMNS} FROM users WHERE user_id = ?", (user_id,))
    return None if row is None else _user_from_row(row)


def _list_users(db: Database) -> list[UserPermissions]:
    return [_user_from_row(row) for row in db.query(f"SELECT {_COLUMNS} FROM users ORDER BY user_id")]


def _kill_switches(db: Database) -> KillSwitches:
    global_on, global_reason = db.one("SELECT kill_on, kill_reason FROM controls WHERE id = 1") or (0, "")
    users = db.query("SELECT user_id, kill_reason FROM users WHERE kill_on = 1 ORDER BY user_id")
    return KillSwitches(global_on=bool(global_on), global_reason=global_reason, users=dict(users))


def _api_keys_version(db: Database) -> str:
    """Changes whenever a key is set, replaced, re-sealed (each stamps updated_at) or deleted (the
    count drops): what executors watch to know their cached credentials are still current."""
    count, latest = db.one("SELECT COUNT(*), COALESCE(MAX(updated_at), '') FROM api_keys") or (0, "")
    return f"{count}@{latest}"


def _bucket(db: Database, user_id: str) -> Bucket | None:
    row = db.one("SELECT tokens, at FROM rate_buckets WHERE user_id = ?", (user_id,))
    return None if row is None else Bucket(tokens=Decimal(row[0]), at=float(row[1]))


def _position(db: Database, user_id: str, pair: str) -> Position | None:
    row = db.one(
        "SELECT pair, quantity, cost_basis, realized_pnl, fees FROM positions WHERE user_id = ? AND pair = ?",
        (user_id, pair),
    )
    return None if row is None else _position_from_row(row)


def _positions(db: Database, user_id: str) -> list[Position]:
    rows = db.query(
        "SELECT pair, quantity, cost_basis, realized_pnl, fees FROM positions WHERE user_id = ? ORDER BY pair",
        (user_id,),
    )
    return [_position_from_row(row) for row in rows]


def _save_position(db: Database, user_id: str, position: Position, now: datetime) -> None:
    db.execute(
        "INSERT INTO positions (user_id, pair, quantity, cost_basis, realized_pnl, fees, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, pair) DO UPDATE SET "
        "quantity = excluded.quantity, cost_basis = excluded.cost_basis, "
        "realized_pnl = excluded.realized_pnl, fees = excluded.fees, updated_at = excluded.updated_at",
        (
            user_id,
            position.pair,
            _text(position.quantity),
            _text(position.cost_basis),
            _text(position.realized_pnl),
            _text(position.fees),
            now.isoformat(),
        ),
    )


def _open_reservations(db: Database, user_id: str) -> list[OpenReservation]:
    rows = db.query(
        "SELECT signal_id, pair, side, reserved_usd, filled_usd FROM reservations "
        "WHERE user_id = ? AND status = 'open' ORDER BY created_at, signal_id",
        (user_id,),
    )
    return [
        OpenReservation(signal_id, pair, Side(side), Decimal(reserved), Decimal(filled))
        for signal_id, pair, side, reserved, filled in rows
    ]


def _open_part(db: Database, user_id: str, signal_id: str) -> tuple[str, Side, Decimal] | None:
    """What one reservation counts for in the user's open totals: (pair, side, remaining USD),
    or None when it is not open."""
    row = db.one(
        "SELECT signal_id, pair, side, reserved_usd, filled_usd FROM reservations "
        "WHERE user_id = ? AND signal_id = ? AND status = 'open'",
        (user_id, signal_id),
    )
    return None if row is None else _part(*row)


def _part(signal_id: str, pair: str, side: str, reserved: str, filled: str) -> tuple[str, Side, Decimal]:
    """An open reservation's row as its part of the open totals: (pair, side, unfilled rest)."""
    held = OpenReservation(signal_id, pair, Side(side), Decimal(reserved), Decimal(filled))
    return held.pair, held.side, held.remaining_usd


def _open_totals(db: Database, user_id: str) -> tuple[OpenTotals, bool]:
    """The user's open reservations summed, and True when those are the kept sums (see
    OPEN_TOTALS_TABLE); False when they were not right and were summed from the rows, O(open).
    Read before the transaction changes any of the user's reservations, then changed along with
    them and saved (_save_open_totals)."""
    row = db.one("SELECT changes, totals, totals_at FROM open_totals WHERE user_id = ?", (user_id,))
    if row is not None and row[1] is not None and row[2] == row[0]:
        return _totals_from_text(row[1]), True
    return OpenTotals.of(_open_reservations(db, user_id)), False


def _save_open_totals(db: Database, user_id: str, totals: OpenTotals) -> None:
    """The sums, right as of the user's current `changes` (this transaction holds the user's lock)."""
    db.execute(
        "INSERT INTO open_totals (user_id, changes, totals, totals_at) VALUES (?, 0, ?, 0) "
        "ON CONFLICT (user_id) DO UPDATE SET totals = excluded.totals, totals_at = open_totals.changes",
        (user_id, _totals_to_text(totals)),
    )


def _expire_orphans(db: Database, user_id: str, now: datetime, cutoff: datetime) -> list[tuple[str, Side, Decimal]]:
    """Open reservations the ledger never reported, made before `cutoff`, expire: what they
    counted for in the open totals."""
    rows = db.query(
        "SELECT signal_id, pair, side, reserved_usd, filled_usd FROM reservations "
        "WHERE user_id = ? AND status = 'open' AND confirmed = 0 AND created_at < ?",
        (user_id, cutoff.isoformat()),
    )
    if not rows:
        return []
    db.execute(
        "UPDATE reservations SET status = 'expired', closed_at = ? "
        "WHERE user_id = ? AND status = 'open' AND confirmed = 0 AND created_at < ?",
        (now.isoformat(), user_id, cutoff.isoformat()),
    )
    return [_part(*row) for row in rows]


def _exposure(db: Database, user_id: str, day: str, totals: OpenTotals | None = None) -> Exposure:
    """`totals`: the open reservations already summed (reserve); None reads them listed."""
    today = db.one(
        "SELECT traded_usd, realized_pnl, fees FROM daily WHERE user_id = ? AND day = ?", (user_id, day)
    )
    traded, realized, fees = (Decimal(v) for v in today) if today else (ZERO, ZERO, ZERO)
    return Exposure(
        user_id=user_id,
        positions={p.pair: p for p in _positions(db, user_id)},
        open_reservations=() if totals is not None else tuple(_open_reservations(db, user_id)),
        open_totals=totals,
        traded_today_usd=traded,
        realized_today=realized,
        fees_today=fees,
    )


def _add_to_day(db: Database, user_id: str, day: str, traded: Decimal, realized: Decimal, fees: Decimal) -> None:
    row = db.one("SELECT traded_usd, realized_pnl, fees FROM daily WHERE user_id = ? AND day = ?", (user_id, day))
    with localcontext(EXACT):
        if row is not None:
            traded += Decimal(row[0])
            realized += Decimal(row[1])
            fees += Decimal(row[2])
    db.execute(
        "INSERT INTO daily (user_id, day, traded_usd, realized_pnl, fees) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (user_id, day) DO UPDATE SET traded_usd = excluded.traded_usd, "
        "realized_pnl = excluded.realized_pnl, fees = excluded.fees",
        (user_id, day, _text(traded), _text(realized), _text(fees)),
    )


def _add_to_reservation(db: Database, user_id: str, signal_id: str, filled: Decimal) -> None:
    row = db.one("SELECT filled_usd FROM reservations WHERE user_id = ? AND signal_id = ?", (user_id, signal_id))
    if row is None:
        return  # fills of a trade reserved elsewhere (or never) still move the position
    with localcontext(EXACT):
        total = Decimal(row[0]) + filled
    db.execute(
        "UPDATE reservations SET filled_usd = ? WHERE user_id = ? AND signal_id = ?",
        (_text(total), user_id, signal_id),
    )


_TOKEN_COLUMNS = "token_id, kind, subject, secret_hash, description, created_at, revoked_at"


def _add_token(db: Database, token: TokenRecord) -> bool:
    added = db.execute(
        f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (token_id) DO NOTHING",
        (
            token.token_id,
            token.kind,
            token.subject,
            token.secret_hash,
            token.description,
            token.created_at.isoformat(),
            None if token.revoked_at is None else token.revoked_at.isoformat(),
        ),
    )
    return added > 0


def _get_token(db: Database, token_id: str) -> TokenRecord | None:
    row = db.one(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_id = ?", (token_id,))
    return None if row is None else _token_from_row(row)


def _list_tokens(db: Database, subject: str | None) -> list[TokenRecord]:
    if subject is None:
        rows = db.query(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY token_id")
    else:
        rows = db.query(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE subject = ? ORDER BY token_id", (subject,))
    return [_token_from_row(row) for row in rows]


def _revoke_token(db: Database, token_id: str, at: datetime) -> bool:
    changed = db.execute(
        "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL", (at.isoformat(), token_id)
    )
    return changed > 0


def _subscribers(db: Database, strategy_id: str) -> tuple[str, ...]:
    rows = db.query("SELECT user_id FROM subscriptions WHERE strategy_id = ? ORDER BY user_id", (strategy_id,))
    return tuple(row[0] for row in rows)


_ALLOCATION_COLUMNS = ", ".join(name for name, _ in ALLOCATION_COLUMNS)


def _list_subscriptions(
    db: Database, strategy_id: str | None, user_id: str | None
) -> list[tuple[str, str, Allocation]]:
    where, params = [], []
    for column, value in (("strategy_id", strategy_id), ("user_id", user_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    rows = db.query(
        f"SELECT strategy_id, user_id, {_ALLOCATION_COLUMNS} FROM subscriptions"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY strategy_id, user_id",
        params,
    )
    return [(row[0], row[1], _allocation_from_row(row[2:])) for row in rows]


def _api_key_brokers(db: Database, user_id: str) -> tuple[str, ...]:
    rows = db.query("SELECT broker FROM api_keys WHERE user_id = ? ORDER BY broker", (user_id,))
    return tuple(row[0] for row in rows)


def _trade_view(db: Database, user_id: str) -> tuple[UserPermissions, tuple[str, ...]] | None:
    permissions = _get_user(db, user_id)
    return None if permissions is None else (permissions, _api_key_brokers(db, user_id))


def _get_api_key(db: Database, user_id: str, broker: str) -> SealedSecret | None:
    row = db.one("SELECT key_id, blob FROM api_keys WHERE user_id = ? AND broker = ?", (user_id, broker))
    return None if row is None else SealedSecret(key_id=row[0], blob=bytes(row[1]))


def _list_api_keys(db: Database, user_id: str) -> list[ApiKeyInfo]:
    rows = db.query(
        "SELECT user_id, broker, key_id, updated_at FROM api_keys WHERE user_id = ? ORDER BY broker", (user_id,)
    )
    return [ApiKeyInfo(u, b, k, datetime.fromisoformat(at)) for u, b, k, at in rows]


def _delete_api_key(db: Database, user_id: str, broker: str) -> bool:
    return db.execute("DELETE FROM api_keys WHERE user_id = ? AND broker = ?", (user_id, broker)) > 0


def _api_key_batch(db: Database, after: tuple[str, str], limit: int) -> list[tuple[str, str, SealedSecret]]:
    rows = db.query(
        "SELECT user_id, broker, key_id, blob FROM api_keys WHERE (user_id, broker) > (?, ?) "
        "ORDER BY user_id, broker LIMIT ?",
        (*after, limit),
    )
    return [(u, b, SealedSecret(key_id=k, blob=bytes(blob))) for u, b, k, blob in rows]


# Rows <-> records.


def _day(now: datetime) -> str:
    """The UTC date: daily limits reset at midnight UTC."""
    return now.astimezone(timezone.utc).date().isoformat()


def _text(value: Decimal) -> str:
    return format(value, "f")


def _optional_text(value: Decimal | None) -> str | None:
    return None if value is None else _text(value)


def _limits_to_columns(limits: RiskLimits) -> dict[str, Any]:
    return {
        "max_position_usd": _optional_text(limits.max_position_usd),
        "max_open_positions": limits.max_open_positions,
        "max_daily_notional_usd": _optional_text(limits.max_daily_notional_usd),
        "max_daily_loss_usd": _optional_text(limits.max_daily_loss_usd),
        "trades_per_second": _text(limits.trades_per_second),
        "trade_burst": limits.trade_burst,
    }


def _user_to_row(user: UserPermissions) -> tuple[Any, ...]:
    preferences = user.preferences
    policy = preferences.routing_policy
    return (
        user.user_id,
        int(user.enabled),
        json.dumps(list(user.allowed_brokers)),
        json.dumps(list(user.allowed_pairs)),
        _text(user.max_order_size_usd),
        json.dumps(list(preferences.preferred_brokers)),
        json.dumps(list(preferences.blocked_brokers)),
        None if policy is None else policy.value,
        preferences.max_slippage_bps,
        *_limits_to_columns(user.limits).values(),
    )


@functools.lru_cache(maxsize=4096)
def _user_from_row(row: tuple[Any, ...]) -> UserPermissions:
    """Parsed once per distinct row (reserve reads the user's row on every call): keyed by the
    row's whole content, so any change to the row is a new key, never a stale answer."""
    (
        user_id,
        enabled,
        brokers,
        pairs,
        max_size,
        preferred,
        blocked,
        policy,
        max_slippage,
        max_position,
        max_open,
        max_notional,
        max_loss,
        rate,
        burst,
    ) = row
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
        limits=RiskLimits(
            max_position_usd=_optional_decimal(max_position, "max_position_usd"),
            max_open_positions=max_open,
            max_daily_notional_usd=_optional_decimal(max_notional, "max_daily_notional_usd"),
            max_daily_loss_usd=_optional_decimal(max_loss, "max_daily_loss_usd"),
            trades_per_second=parse_decimal(rate, "trades_per_second"),
            trade_burst=burst,
        ),
    )


def _optional_decimal(text: str | None, field: str) -> Decimal | None:
    return None if text is None else parse_decimal(text, field)


def _allocation_to_row(allocation: Allocation) -> tuple[Any, ...]:
    return (
        allocation.rule.value,
        _text(allocation.amount),
        _optional_text(allocation.capital_usd),
        _optional_text(allocation.max_order_usd),
        json.dumps(sorted(allocation.pairs)),
    )


def _allocation_from_row(row: Sequence[Any]) -> Allocation:
    rule, amount, capital, cap, pairs = row
    return Allocation(
        rule=Rule(rule),
        amount=parse_decimal(amount, "amount"),
        capital_usd=_optional_decimal(capital, "capital_usd"),
        max_order_usd=_optional_decimal(cap, "max_order_usd"),
        pairs=frozenset(json.loads(pairs)),
    )


def _position_from_row(row: Sequence[Any]) -> Position:
    pair, quantity, cost_basis, realized, fees = row
    return Position(pair, Decimal(quantity), Decimal(cost_basis), Decimal(realized), Decimal(fees))


def _totals_to_text(totals: OpenTotals) -> str:
    return json.dumps(
        sorted([pair, side.value, _text(remaining), count] for (pair, side), (remaining, count) in totals.sums.items())
    )


def _totals_from_text(text: str) -> OpenTotals:
    sums = {(pair, Side(side)): (Decimal(remaining), count) for pair, side, remaining, count in json.loads(text)}
    return OpenTotals(sums)


def _token_from_row(row: Sequence[Any]) -> TokenRecord:
    token_id, kind, subject, secret_hash, description, created_at, revoked_at = row
    return TokenRecord(
        token_id=token_id,
        kind=kind,
        subject=subject,
        secret_hash=secret_hash,
        description=description,
        created_at=datetime.fromisoformat(created_at),
        revoked_at=None if revoked_at is None else datetime.fromisoformat(revoked_at),
    )
