"""What the aggregator reports to the permission service, as the positions book takes it.

The position math itself is pure domain code (`services.domain.positions`); its names are
re-exported here so that existing imports keep working.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal

from services.domain.positions import DIVISION, EXACT, QUANTUM, BadFill, Position, apply_fill, check_fill
from services.domain.signal import Side, SignalProblem, check_id, check_pair

__all__ = [
    "DIVISION",
    "EXACT",
    "QUANTUM",
    "BadFill",
    "ExecutionEvent",
    "FillEvent",
    "Position",
    "apply_fill",
]

# What the aggregator reports (DESIGN.md: aggregator --ApplyFill--> permission).


@dataclasses.dataclass(frozen=True)
class FillEvent:
    #: The venue's trade id (or what the aggregator derives from it): fills are applied once per key.
    fill_key: str
    price: Decimal
    quantity: Decimal
    fee: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.fill_key, str) or not self.fill_key or len(self.fill_key) > 256:
            raise BadFill(f"fill_key must be 1-256 characters, got {self.fill_key!r}")


@dataclasses.dataclass(frozen=True)
class ExecutionEvent:
    """Fills of one reservation (one signal), and whether the execution is over (terminal)."""

    user_id: str
    #: The signal_id the trade was reserved under.
    reservation_id: str
    pair: str
    side: Side
    fills: Sequence[FillEvent] = ()
    #: FILLED, REJECTED, FAILED, CANCELLED: the reservation's unfilled rest is released.
    terminal: bool = False

    def __post_init__(self) -> None:
        try:
            check_id(self.user_id, "user_id")
            check_id(self.reservation_id, "reservation_id")
            check_pair(self.pair)
        except SignalProblem as problem:
            raise BadFill(str(problem)) from None
        fills = tuple(self.fills)
        for fill in fills:
            if not isinstance(fill, FillEvent):
                raise BadFill(f"fills must be FillEvents, got {fill!r}")
            check_fill(self.side, fill.price, fill.quantity, fill.fee)
        object.__setattr__(self, "fills", fills)
