"""The order state machine: which status may follow which. Pure, no I/O.

An illegal move raises `IllegalTransition`; it is never silently applied.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    PENDING = "pending"
    ROUTING = "routing"
    QUEUED = "queued"
    EXECUTING = "executing"
    PARTIAL_FILL = "partial_fill"
    FILLED = "filled"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.FILLED, Status.REJECTED, Status.FAILED, Status.CANCELLED})

_ENDINGS = {Status.REJECTED, Status.FAILED, Status.CANCELLED}

# (from) -> set of (to). ROUTING -> ROUTING is a failover to another broker, and so is
# QUEUED -> ROUTING (an executor handed the order back before sending anything); EXECUTING after
# PARTIAL_FILL is the next slice of a TWAP; PARTIAL_FILL -> PARTIAL_FILL is another fill.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.ROUTING} | _ENDINGS),
    Status.ROUTING: frozenset({Status.ROUTING, Status.QUEUED} | _ENDINGS),
    Status.QUEUED: frozenset({Status.EXECUTING, Status.ROUTING} | _ENDINGS),
    Status.EXECUTING: frozenset({Status.EXECUTING, Status.PARTIAL_FILL, Status.FILLED} | _ENDINGS),
    Status.PARTIAL_FILL: frozenset(
        {Status.PARTIAL_FILL, Status.EXECUTING, Status.FILLED, Status.FAILED, Status.CANCELLED}
    ),
    Status.FILLED: frozenset(),
    Status.REJECTED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


class IllegalTransition(ValueError):
    def __init__(self, current: Status | None, new: Status) -> None:
        was = current.value if current else "nothing"
        super().__init__(f"illegal transition {was} -> {new.value}")
        self.current = current
        self.new = new


def check_transition(current: Status | None, new: Status) -> Status:
    """Return `new` if moving from `current` to it is legal; an order starts in PENDING."""
    if current is None:
        if new is Status.PENDING:
            return new
        raise IllegalTransition(current, new)
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(current, new)
    return new
