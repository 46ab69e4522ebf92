"""A user's trading permissions and routing preferences: the record the permission service owns. Pure."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from decimal import Decimal

from services.domain.brokers import BROKERS
from services.domain.money import BadDecimal, parse_positive
from services.domain.signal import SignalProblem, check_id, check_pair

#: 100%: a slippage bound above this cannot mean anything.
MAX_SLIPPAGE_BPS = 10_000


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
class UserPermissions:
    """Validated on construction; brokers and pairs are kept sorted and de-duplicated."""

    user_id: str
    enabled: bool
    allowed_brokers: tuple[str, ...]
    #: Empty means every pair.
    allowed_pairs: tuple[str, ...]
    max_order_size_usd: Decimal
    preferences: RoutingPreferences = dataclasses.field(default_factory=RoutingPreferences)

    def __post_init__(self) -> None:
        try:
            check_id(self.user_id, "user_id")
            pairs = _sorted_unique(check_pair(p) for p in self.allowed_pairs)
        except SignalProblem as problem:
            raise BadPermissions(str(problem)) from None
        if not isinstance(self.enabled, bool):
            raise BadPermissions(f"enabled must be a bool, got {self.enabled!r}")
        brokers = _broker_names(self.allowed_brokers, "allowed_brokers")
        size = self.max_order_size_usd
        if not isinstance(size, Decimal) or not size.is_finite():
            raise BadPermissions(f"max_order_size_usd must be a finite Decimal, got {size!r}")
        try:
            # Must survive the trip through the wire and the store as a plain decimal string.
            parse_positive(format(size, "f"), "max_order_size_usd")
        except BadDecimal as exc:
            raise BadPermissions(str(exc)) from None
        if not isinstance(self.preferences, RoutingPreferences):
            raise BadPermissions(f"preferences must be RoutingPreferences, got {self.preferences!r}")
        object.__setattr__(self, "allowed_brokers", brokers)
        object.__setattr__(self, "allowed_pairs", pairs)


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
    unknown = sorted(repr(n) for n in names if n not in BROKERS)
    if unknown:
        raise BadPermissions(f"unknown brokers [{', '.join(unknown)}] in {field}; known: {list(BROKERS)}")
    return tuple(sorted(names))


def _sorted_unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))
