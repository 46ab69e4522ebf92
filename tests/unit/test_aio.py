"""services.runtime.aio.wait_set: the event wait that keeps a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.aio import wait_set


async def test_it_answers_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_set(event, 10) is True


async def test_a_cancel_in_the_turn_the_event_is_set_still_cancels() -> None:
    # asyncio.wait_for on Python 3.11 returns normally here, and a loop around it never stops.
    event = asyncio.Event()

    async def follow() -> int:
        turns = 0
        while True:
            await wait_set(event, 10)
            event.clear()
            turns += 1

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)  # the task waits on the event
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
