"""Waiting on asyncio events without losing a cancellation.

`asyncio.wait_for` must not be used for this on Python 3.11: when the task is cancelled in the
same loop turn as the awaited event is set, it returns normally and the cancellation is lost. A
loop that waits on an event with a timeout then never stops; that hung the aggregator's shutdown
about once in twenty test runs (its webhook outbox task, cancelled while an update woke it).
`asyncio.timeout` counts cancellations and keeps it.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set, at most `timeout_s`; True when it is set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()
