"""Execution statistics: per broker+pair outcome windows and a latency moving average. Pure."""

from __future__ import annotations

from collections import deque


class PairPerformance:
    """Success rate of the last `window` executions per (broker, pair) (seed: 100)."""

    def __init__(self, window: int = 100) -> None:
        self._window = window
        self._outcomes: dict[tuple[str, str], deque[bool]] = {}

    def record(self, broker: str, pair: str, success: bool) -> None:
        key = (broker, pair)
        outcomes = self._outcomes.get(key)
        if outcomes is None:
            outcomes = self._outcomes[key] = deque(maxlen=self._window)
        outcomes.append(success)

    def success_rate(self, broker: str, pair: str) -> float | None:
        outcomes = self._outcomes.get((broker, pair))
        if not outcomes:
            return None
        return sum(outcomes) / len(outcomes)


class LatencyAverage:
    """Exponentially weighted moving average of measured round trips, in milliseconds."""

    def __init__(self, alpha: float = 0.2, initial_ms: float = 0.0) -> None:
        self._alpha = alpha
        self.value_ms = initial_ms
        self.samples = 0

    def observe(self, ms: float) -> None:
        self.value_ms = ms if self.samples == 0 else self._alpha * ms + (1 - self._alpha) * self.value_ms
        self.samples += 1
