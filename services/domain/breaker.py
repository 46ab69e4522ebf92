"""Circuit breaker (seed: 5 consecutive failures -> OPEN for 60 s -> HALF_OPEN admits one probe).

Only transport-class failures are recorded here (timeouts, 5xx, connection errors); a user's
rejected order is not the exchange's fault. Time comes from an injected clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, clock: Callable[[], float], failure_threshold: int = 5, open_seconds: float = 60.0
    ) -> None:
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.open_seconds:
            self._state = BreakerState.HALF_OPEN
            self._probe_out = False
        return self._state

    def allow(self) -> bool:
        """Whether a request may go to the venue now. In HALF_OPEN exactly one probe is admitted."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._probe_out = False
        self._state = BreakerState.CLOSED

    def record_failure(self) -> None:
        state = self.state
        self._failures += 1
        if state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._probe_out = False
