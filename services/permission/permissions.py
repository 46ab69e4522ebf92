"""The records the permission service owns: a user's permissions, routing preferences and risk
limits; kill switches; access tokens; sealed API keys. Pure: validated on construction, no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

from services.domain.brokers import BROKERS
from services.domain.money import BadDecimal, parse_positive
from services.domain.signal import SignalProblem, check_id, check_pair

#: 100%: a slippage bound above this cannot mean anything.
MAX_SLIPPAGE_BPS = 10_000
#: Sanity bounds on the per-user trade rate (a typo, not a policy, goes above these).
MAX_TRADES_PER_SECOND = Decimal(1_000_000)
MAX_TRADE_BURST = 1_000_000


class BadPermissions(ValueError):
    """A permissions record that breaks a rule (unknown broker, malformed pair, ...)."""


class RoutingPolicy(enum.Enum):
    """How the router chooses among the brokers a trade may go to."""

    #: The seed's weighted score (fees, latency, success rate, load, pair history).
    SCORE = "score"
    #: The cheapest expected all-in cost (fee + slippage [+ withdrawal]).
    COST = "cost"


@dataclasses.dataclass(frozen=True)
class RoutingPreferences:
    """How a user wants orders routed. Validated on construction; broker lists kept sorted and unique.

    The defaults are "no preference": the router decides with its own defaults.
    """

    #: Tried first when eligible; the other allowed brokers only when none of these is.
    preferred_brokers: tuple[str, ...] = ()
    #: Never used, even when allowed.
    blocked_brokers: tuple[str, ...] = ()
    #: None: the router's default policy.
    routing_policy: RoutingPolicy | None = None
    #: Exclude a broker whose expected slippage for the order exceeds this; 0 = no limit.
    max_slippage_bps: int = 0

    def __post_init__(self) -> None:
        preferred = _broker_names(self.preferred_brokers, "preferred_brokers")
        blocked = _broker_names(self.blocked_brokers, "blocked_brokers")
        both = sorted(set(preferred) & set(blocked))
        if both:
            raise BadPermissions(f"brokers {both} are both preferred and blocked")
        if self.routing_policy is not None and not isinstance(self.routing_policy, RoutingPolicy):
            raise BadPermissions(
                f"routing_policy must be a RoutingPolicy or None, got {self.routing_policy!r}; "
                f"known: {[p.value for p in RoutingPolicy]}"
            )
        bps = self.max_slippage_bps
        # bool is an int subclass; True is not a slippage bound.
        if not isinstance(bps, int) or isinstance(bps, bool) or not 0 <= bps <= MAX_SLIPPAGE_BPS:
            raise BadPermissions(
                f"max_slippage_bps must be an int from 0 (no limit) to {MAX_SLIPPAGE_BPS}, got {bps!r}"
            )
        object.__setattr__(self, "preferred_brokers", preferred)
        object.__setattr__(self, "blocked_brokers", blocked)


@dataclasses.dataclass(frozen=True)
class RiskLimits:
    """A user's pre-trade risk limits (services.permission.risk applies them). None: no limit.

    Every limit is positive: to stop a user trading, disable the user or turn on its kill switch.
    The maximum size of one order is UserPermissions.max_order_size_usd.
    """

    #: Worst-case exposure in one pair, at cost, counting open reservations (USD).
    max_position_usd: Decimal | None = None
    #: Pairs with a position or an open reservation.
    max_open_positions: int | None = None
    #: Traded today (UTC) plus every open reservation's remainder (USD).
    max_daily_notional_usd: Decimal | None = None
    #: New trades stop once today's realized loss net of fees reaches this (USD).
    max_daily_loss_usd: Decimal | None = None
    #: The per-user rate limit (the seed's): a token bucket refilled at this rate...
    trades_per_second: Decimal = Decimal(1)
    #: ...holding at most this many trades.
    trade_burst: int = 1

    def __post_init__(self) -> None:
        for field in ("max_position_usd", "max_daily_notional_usd", "max_daily_loss_usd"):
            value = getattr(self, field)
            if value is not None:
                _check_positive_decimal(value, field)
        count = self.max_open_positions
        if count is not None and (not _is_int(count) or count < 1):
            raise BadPermissions(f"max_open_positions must be None or an int >= 1, got {count!r}")
        _check_positive_decimal(self.trades_per_second, "trades_per_second")
        if self.trades_per_second > MAX_TRADES_PER_SECOND:
            raise BadPermissions(f"trades_per_second must be at most {MAX_TRADES_PER_SECOND}")
        burst = self.trade_burst
        if not _is_int(burst) or not 1 <= burst <= MAX_TRADE_BURST:
            raise BadPermissions(f"trade_burst must be an int from 1 to {MAX_TRADE_BURST}, got {burst!r}")


@dataclasses.dataclass(frozen=True)
class UserPermissions:
    """Validated on construction; brokers and pairs are kept sorted and de-duplicated."""

    user_id: str
    enabled: bool
    allowed_brokers: tuple[str, ...]
    #: Empty means every pair.
    allowed_pairs: tuple[str, ...]
    max_order_size_usd: Decimal
    preferences: RoutingPreferences = dataclasses.field(default_factory=RoutingPreferences)
    limits: RiskLimits = dataclasses.field(default_factory=RiskLimits)

    def __post_init__(self) -> None:
        try:
            check_id(self.user_id, "user_id")
            pairs = _sorted_unique(check_pair(p) for p in self.allowed_pairs)
        except SignalProblem as problem:
            raise BadPermissions(str(problem)) from None
        if not isinstance(self.enabled, bool):
            raise BadPermissions(f"enabled must be a bool, got {self.enabled!r}")
        brokers = _broker_names(self.allowed_brokers, "allowed_brokers")
        _check_positive_decimal(self.max_order_size_usd, "max_order_size_usd")
        if not isinstance(self.preferences, RoutingPreferences):
            raise BadPermissions(f"preferences must be RoutingPreferences, got {self.preferences!r}")
        if not isinstance(self.limits, RiskLimits):
            raise BadPermissions(f"limits must be RiskLimits, got {self.limits!r}")
        object.__setattr__(self, "allowed_brokers", brokers)
        object.__setattr__(self, "allowed_pairs", pairs)


@dataclasses.dataclass(frozen=True)
class KillSwitches:
    """Which kill switches are on. A switch that is on denies every new trade it covers."""

    global_on: bool = False
    global_reason: str = ""
    #: user_id -> reason, for every user whose own switch is on.
    users: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", MappingProxyType(dict(sorted(self.users.items()))))


TOKEN_KINDS = ("user", "strategy", "admin", "service")


@dataclasses.dataclass(frozen=True)
class TokenRecord:
    """A bearer token as stored: only a hash of its secret, never the secret itself."""

    token_id: str
    #: One of TOKEN_KINDS: what the subject is.
    kind: str
    #: The user, strategy, admin or service the token acts as.
    subject: str
    #: Whatever the authenticator stores to verify the secret (e.g. "sha256:<hex>").
    secret_hash: str
    description: str
    created_at: datetime
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        try:
            check_id(self.token_id, "token_id")
            check_id(self.subject, "subject")
        except SignalProblem as problem:
            raise BadPermissions(str(problem)) from None
        if self.kind not in TOKEN_KINDS:
            raise BadPermissions(f"token kind must be one of {list(TOKEN_KINDS)}, got {self.kind!r}")
        if not isinstance(self.secret_hash, str) or not self.secret_hash:
            raise BadPermissions("secret_hash must be a non-empty string")
        if not isinstance(self.description, str):
            raise BadPermissions(f"description must be a string, got {self.description!r}")
        for field in ("created_at", "revoked_at"):
            value = getattr(self, field)
            if value is None and field == "revoked_at":
                continue
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise BadPermissions(f"{field} must be a timezone-aware datetime, got {value!r}")

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclasses.dataclass(frozen=True)
class SealedSecret:
    """An encrypted API key as stored: which master key sealed it, and the sealed bytes.

    The store keeps these bytes and nothing else; sealing and opening happen elsewhere.
    """

    key_id: str
    blob: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not self.key_id:
            raise BadPermissions("key_id must be a non-empty string")
        if not isinstance(self.blob, bytes) or not self.blob:
            raise BadPermissions("blob must be non-empty bytes")


@dataclasses.dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a stored API key: never the key."""

    user_id: str
    broker: str
    #: The master key that sealed it (a rotation moves every key to the new one).
    key_id: str
    updated_at: datetime


def _check_positive_decimal(value: object, field: str) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise BadPermissions(f"{field} must be a finite Decimal, got {value!r}")
    try:
        # Must survive the trip through the wire and the store as a plain decimal string.
        parse_positive(format(value, "f"), field)
    except BadDecimal as exc:
        raise BadPermissions(str(exc)) from None


def _is_int(value: object) -> bool:
    # bool is an int subclass; True is not a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _broker_names(values: Iterable[str], field: str) -> tuple[str, ...]:
    """Known broker names, sorted and unique; `field` names the list in the error."""
    if isinstance(values, str):
        # A lone string would otherwise be read as a list of one-letter "brokers".
        raise BadPermissions(f"{field} must be a sequence of broker names, got the string {values!r}")
    try:
        names = set(values)
    except TypeError:
        raise BadPermissions(f"{field} must be a sequence of broker names, got {values!r}") from None
    # Compared before sorting: a stray non-string must be refused, not crash the sort.
    # Quoted cut short: the message goes back to the caller, whatever they sent.
    unknown = sorted(repr(n)[:40] for n in names if n not in BROKERS)
    if unknown:
        raise BadPermissions(f"unknown brokers [{', '.join(unknown[:5])}] in {field}; known: {list(BROKERS)}")
    return tuple(sorted(names))


def _sorted_unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))
