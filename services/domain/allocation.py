"""How much of a strategy's signal each subscriber trades. Pure.

A subscription carries one rule, fixed per signal:
- FIXED_USD: every signal trades `amount` USD;
- PERCENT_OF_CAPITAL: every signal trades `amount` percent of the capital the user stated;
- MULTIPLIER: every signal trades the strategy's own size times `amount`.
Optional on top: a cap on one order (`max_order_usd`) and a pair filter (`pairs`, empty = all).

A child size is cut down to whole cents (never rounded up: a subscriber never trades more than
the rule gives) and must reach MIN_ORDER_USD, else the subscriber is skipped with a reason.
"""

from __future__ import annotations

import dataclasses
import enum
from decimal import ROUND_DOWN, Decimal

CENT = Decimal("0.01")
#: Below this a child order is not worth sending (every venue's minimum notional is higher).
MIN_ORDER_USD = Decimal(1)
MAX_PERCENT = Decimal(100)


class Rule(enum.Enum):
    FIXED_USD = "fixed_usd"
    PERCENT_OF_CAPITAL = "percent_of_capital"
    MULTIPLIER = "multiplier"


class AllocationProblem(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class Allocation:
    rule: Rule = Rule.MULTIPLIER
    amount: Decimal = Decimal(1)
    #: PERCENT_OF_CAPITAL only: the capital the percent is of.
    capital_usd: Decimal | None = None
    max_order_usd: Decimal | None = None
    pairs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        check(self)


def check(allocation: Allocation) -> None:
    """AllocationProblem naming the field when the rule cannot size anything sensibly."""
    if not allocation.amount.is_finite() or allocation.amount <= 0:
        raise AllocationProblem(allocation.rule.value, f"{allocation.rule.value} must be > 0, got {allocation.amount}")
    if allocation.rule is Rule.PERCENT_OF_CAPITAL:
        if allocation.amount > MAX_PERCENT:
            raise AllocationProblem("percent", f"percent must be at most 100, got {allocation.amount}")
        capital = allocation.capital_usd
        if capital is None or not capital.is_finite() or capital <= 0:
            raise AllocationProblem("capital_usd", f"capital_usd must be > 0, got {capital}")
    elif allocation.capital_usd is not None:
        raise AllocationProblem("capital_usd", "capital_usd belongs to the percent_of_capital rule only")
    cap = allocation.max_order_usd
    if cap is not None and (not cap.is_finite() or cap <= 0):
        raise AllocationProblem("max_order_usd", f"max_order_usd must be > 0, got {cap}")


@dataclasses.dataclass(frozen=True)
class Sizing:
    """A child order's size, or why the subscriber gets none (`size_usd` None)."""

    size_usd: Decimal | None
    skipped: str = ""


def size_for(allocation: Allocation, strategy_size_usd: Decimal, pair: str) -> Sizing:
    """What one subscriber trades for one strategy signal."""
    if allocation.pairs and pair not in allocation.pairs:
        return Sizing(None, f"PAIR_FILTERED: {pair} is not among the subscription's pairs")
    if allocation.rule is Rule.FIXED_USD:
        size = allocation.amount
    elif allocation.rule is Rule.PERCENT_OF_CAPITAL:
        assert allocation.capital_usd is not None
        size = allocation.capital_usd * allocation.amount / MAX_PERCENT
    else:
        size = strategy_size_usd * allocation.amount
    if allocation.max_order_usd is not None:
        size = min(size, allocation.max_order_usd)
    size = size.quantize(CENT, rounding=ROUND_DOWN)
    if size < MIN_ORDER_USD:
        return Sizing(None, f"SIZE_TOO_SMALL: the rule gives ${size}, under the ${MIN_ORDER_USD} minimum")
    return Sizing(size)
