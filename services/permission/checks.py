"""The static trade check: may this user place this trade, and on which brokers? Pure.

A denial is a `Decision`, never an exception. Checks run in this order and the first that fails
decides: user enabled, pair allowed, size within the user's maximum, at least one broker allowed,
at least one allowed broker not blocked by the user's routing preferences.

The checks that need state (kill switches, the rate limit, positions and reservations) are in
services.permission.risk; the store runs them all, in order, inside one transaction.
"""

from __future__ import annotations

import dataclasses
import enum
from decimal import Decimal

from services.domain.money import fmt
from services.domain.signal import Side
from services.permission.permissions import (
    KillSwitches,
    RoutingPreferences,
    UserPermissions,
)


class Denial(enum.Enum):
    USER_DISABLED = "user_disabled"
    PAIR_NOT_ALLOWED = "pair_not_allowed"
    SIZE_ABOVE_MAX = "size_above_max"
    NO_ALLOWED_BROKER = "no_allowed_broker"
    # The stateful checks (services.permission.risk and the store's reserve).
    KILL_SWITCH = "kill_switch"
    RATE_LIMITED = "rate_limited"
    POSITION_LIMIT = "position_limit"
    OPEN_POSITIONS_LIMIT = "open_positions_limit"
    DAILY_NOTIONAL_LIMIT = "daily_notional_limit"
    DAILY_LOSS_LIMIT = "daily_loss_limit"


@dataclasses.dataclass(frozen=True)
class TradeRequest:
    """A validated CheckTrade request. `signal_id` is required to reserve (it keys the reservation)."""

    user_id: str
    pair: str
    side: Side
    size_usd: Decimal
    signal_id: str = ""


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    #: Human-readable; empty when allowed.
    reason: str = ""
    code: Denial | None = None
    #: Brokers the trade may be routed to: allowed and not blocked (sorted; empty when denied).
    brokers: tuple[str, ...] = ()
    #: The user's routing preferences, for the router (empty when denied).
    preferences: RoutingPreferences = dataclasses.field(default_factory=RoutingPreferences)


def deny(code: Denial, reason: str) -> Decision:
    return Decision(allowed=False, reason=reason, code=code)


def check_trade(permissions: UserPermissions, request: TradeRequest) -> Decision:
    if request.user_id != permissions.user_id:
        raise ValueError(f"permissions of {permissions.user_id} used to check {request.user_id}")
    user = permissions.user_id
    if not permissions.enabled:
        return deny(Denial.USER_DISABLED, f"trading disabled for user {user}")
    if permissions.allowed_pairs and request.pair not in permissions.allowed_pairs:
        return deny(
            Denial.PAIR_NOT_ALLOWED,
            f"pair {request.pair} not allowed for user {user} "
            f"(allowed: {', '.join(permissions.allowed_pairs)})",
        )
    if request.size_usd > permissions.max_order_size_usd:
        return deny(
            Denial.SIZE_ABOVE_MAX,
            f"size {fmt(request.size_usd)} USD above max order size "
            f"{fmt(permissions.max_order_size_usd)} USD for user {user}",
        )
    if not permissions.allowed_brokers:
        return deny(Denial.NO_ALLOWED_BROKER, f"no broker allowed for user {user}")
    allowed = allowed_decision(permissions)
    if not allowed.brokers:
        blocked = set(permissions.preferences.blocked_brokers) & set(permissions.allowed_brokers)
        return deny(
            Denial.NO_ALLOWED_BROKER,
            f"every broker allowed for user {user} is blocked by the user's routing preferences "
            f"(blocked: {', '.join(sorted(blocked))})",
        )
    return allowed


def allowed_decision(permissions: UserPermissions) -> Decision:
    """An allowed decision with the user's current brokers (allowed and not blocked) and preferences."""
    preferences = permissions.preferences
    blocked = set(preferences.blocked_brokers)
    brokers = tuple(sorted(b for b in permissions.allowed_brokers if b not in blocked))
    return Decision(allowed=True, brokers=brokers, preferences=preferences)


def kill_switch_denial(switches: KillSwitches, user_id: str) -> Decision | None:
    """The denial a kill switch on for this user (or everyone) makes; worded the same for
    every check."""
    if switches.global_on:
        return Decision(False, f"global kill switch is on: {switches.global_reason}", Denial.KILL_SWITCH)
    if user_id in switches.users:
        return Decision(False, f"kill switch is on for user {user_id}: {switches.users[user_id]}", Denial.KILL_SWITCH)
    return None
