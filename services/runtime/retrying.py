"""Calling a peer again while it is busy or away: one loop for every caller that may.

Only calls that are safe to repeat come here: an update recorded under its update id, an order
created under its submission id, a keys read. A refusal is never retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import grpc

from services.runtime.errors import ServiceError

T = TypeVar("T")

#: Failures a later attempt may not meet: the peer busy (its deadline passed) or away.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    *,
    for_s: float,
    delays: Iterator[float],
    on_retry: Callable[[ServiceError, float], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`attempt()`'s result; a TRANSIENT ServiceError is tried again after the next of `delays`
    (`on_retry(error, delay)` told first) while that stays within `for_s` of the start. Any other
    error, and the last transient one, is raised."""
    give_up_at = clock() + for_s
    while True:
        try:
            return await attempt()
        except ServiceError as exc:
            delay = next(delays)
            if exc.code not in TRANSIENT or clock() + delay > give_up_at:
                raise
            on_retry(exc, delay)
            await sleep(delay)
