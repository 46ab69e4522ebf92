"""Exponential backoff with jitter (seed: 1 s base, 60 s cap). Pure: the randomness is injected.

Only operations that are safe to repeat are retried with it (looking an order up, reading a
book); placing an order is never simply repeated: its outcome is resolved by client order id.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff(base_s: float, cap_s: float, rng: random.Random) -> Iterator[float]:
    """Delays for attempt 1, 2, ...: "full jitter" over base * 2^n, capped at cap_s."""
    attempt = 0
    while True:
        ceiling = min(cap_s, base_s * (2**attempt))
        yield rng.uniform(ceiling / 2, ceiling)
        attempt += 1
