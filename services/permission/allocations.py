"""Strategy subscriptions on the wire: the one place allocations turn from proto to domain and back.

The servicer (SetSubscription, ListSubscriptions), the client (the router's `subscriptions`) and
the admin CLI all convert here, so the three cannot disagree on what a message means.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from nija.permission.v1 import permission_pb2

from services.domain.allocation import Allocation, AllocationProblem, Rule
from services.domain.money import BadDecimal, fmt, parse_decimal
from services.domain.signal import SignalProblem, check_pair

#: A pair filter longer than this is a mistake, not a filter.
MAX_PAIRS = 100

#: The domain's name for a field -> the proto field it came from (reasons are BAD_<name>).
_PB_FIELD = {"percent_of_capital": "percent"}
_PB_PATH = {"percent": "percent_of_capital.percent", "capital_usd": "percent_of_capital.capital_usd"}


def pb_path(field: str) -> str:
    """Where a problem's field is inside the Allocation message ("percent_of_capital.percent")."""
    return _PB_PATH.get(field, field)


@dataclasses.dataclass(frozen=True)
class Subscription:
    """One subscriber of a strategy and how much of each of its signals they trade."""

    user_id: str
    allocation: Allocation


def allocation_from_pb(pb: permission_pb2.Allocation | None) -> Allocation:
    """The domain allocation, checked whole; AllocationProblem names the first bad field.

    No allocation, or one without a rule, trades the strategy's own size (multiplier 1), with
    whatever cap and pair filter it carries.
    """
    if pb is None:
        return Allocation()
    which = pb.WhichOneof("rule")
    capital: Decimal | None = None
    if which == "fixed_usd":
        rule, amount = Rule.FIXED_USD, _decimal(pb.fixed_usd, "fixed_usd")
    elif which == "percent_of_capital":
        rule = Rule.PERCENT_OF_CAPITAL
        amount = _decimal(pb.percent_of_capital.percent, "percent")
        capital = _decimal(pb.percent_of_capital.capital_usd, "capital_usd")
    elif which == "multiplier":
        rule, amount = Rule.MULTIPLIER, _decimal(pb.multiplier, "multiplier")
    else:
        rule, amount = Rule.MULTIPLIER, Decimal(1)
    cap = _decimal(pb.max_order_usd, "max_order_usd") if pb.max_order_usd else None
    pairs = _pairs(pb.pairs)
    try:
        return Allocation(rule=rule, amount=amount, capital_usd=capital, max_order_usd=cap, pairs=pairs)
    except AllocationProblem as problem:
        raise AllocationProblem(_PB_FIELD.get(problem.field, problem.field), str(problem)) from None


def allocation_to_pb(allocation: Allocation) -> permission_pb2.Allocation:
    pb = permission_pb2.Allocation(
        max_order_usd=fmt(allocation.max_order_usd) if allocation.max_order_usd is not None else "",
        pairs=sorted(allocation.pairs),
    )
    if allocation.rule is Rule.FIXED_USD:
        pb.fixed_usd = fmt(allocation.amount)
    elif allocation.rule is Rule.PERCENT_OF_CAPITAL:
        assert allocation.capital_usd is not None  # Allocation checks it
        pb.percent_of_capital.CopyFrom(permission_pb2.PercentOfCapital(
            percent=fmt(allocation.amount), capital_usd=fmt(allocation.capital_usd)))
    else:
        pb.multiplier = fmt(allocation.amount)
    return pb


def subscription_from_pb(pb: permission_pb2.Subscription) -> Subscription:
    return Subscription(user_id=pb.user_id, allocation=allocation_from_pb(pb.allocation))


def subscription_to_pb(strategy_id: str, user_id: str, allocation: Allocation) -> permission_pb2.Subscription:
    return permission_pb2.Subscription(
        strategy_id=strategy_id, user_id=user_id, allocation=allocation_to_pb(allocation)
    )


def describe(allocation: Allocation) -> str:
    """One line for people (audit logs, the CLI): the rule, its cap and its pairs."""
    if allocation.rule is Rule.FIXED_USD:
        text = f"fixed ${fmt(allocation.amount)}"
    elif allocation.rule is Rule.PERCENT_OF_CAPITAL:
        assert allocation.capital_usd is not None
        text = f"{fmt(allocation.amount)}% of ${fmt(allocation.capital_usd)}"
    else:
        text = f"x{fmt(allocation.amount)}"
    if allocation.max_order_usd is not None:
        text += f", max ${fmt(allocation.max_order_usd)}"
    if allocation.pairs:
        text += f", pairs {','.join(sorted(allocation.pairs))}"
    return text


def _decimal(text: str, field: str) -> Decimal:
    try:
        return parse_decimal(text, field)
    except BadDecimal as exc:
        raise AllocationProblem(field, str(exc)) from None


def _pairs(values: list[str] | tuple[str, ...]) -> frozenset[str]:
    if len(values) > MAX_PAIRS:
        raise AllocationProblem("pairs", f"at most {MAX_PAIRS} pairs, got {len(values)}")
    try:
        return frozenset(check_pair(value) for value in values)
    except SignalProblem as problem:
        raise AllocationProblem("pairs", str(problem)) from None
