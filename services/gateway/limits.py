"""Dedupe window and per-strategy rate limit of the webhook gateway. Pure: time is a `clock()`
returning monotonic seconds, injected so tests move it by hand."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable

from services.domain.rate_limits import KeyedBuckets

Clock = Callable[[], float]


class Deduper:
    """Remembers accepted alerts by key (their id, their content) for `window_s` seconds.

    TradingView re-sends an alert when our answer is slow or lost, and a strategy may fire the
    same alert twice: either repeat, seen within the window, is answered as a duplicate of the
    first. Bounded: beyond `max_entries` the oldest are forgotten first.
    """

    def __init__(self, window_s: float, clock: Clock, max_entries: int = 100_000) -> None:
        self.window_s = window_s
        self._clock = clock
        self._max = max_entries
        self._seen: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (alert id, when)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, (_, at) = next(iter(self._seen.items()))
            if now - at < self.window_s and len(self._seen) <= self._max:
                break
            del self._seen[key]

    def seen(self, keys: Iterable[str]) -> str | None:
        """The alert id of an earlier alert with any of these keys within the window."""
        self._expire(self._clock())
        for key in keys:
            if key in self._seen:
                return self._seen[key][0]
        return None

    def remember(self, keys: Iterable[str], alert_id: str) -> None:
        now = self._clock()
        for key in keys:
            self._seen.pop(key, None)
            self._seen[key] = (alert_id, now)
        self._expire(now)

    def __len__(self) -> int:
        return len(self._seen)


class RateLimiter:
    """A token bucket per strategy: `burst` alerts at once, refilled at `rate_per_minute`."""

    def __init__(self, clock: Clock) -> None:
        self._buckets = KeyedBuckets(clock)

    def take(self, strategy_id: str, rate_per_minute: float, burst: int) -> float:
        """0.0 when the alert may go ahead (a token is taken); else the seconds until one could."""
        return self._buckets.take(strategy_id, burst, rate_per_minute / 60.0)


def retry_after_header(seconds: float) -> str:
    """Whole seconds for a Retry-After header, never 0 (a client would retry at once)."""
    return str(max(1, math.ceil(seconds))) if math.isfinite(seconds) else "3600"
