"""One user's signals are decided a few at a time; other users are never held up by them, and
nothing is kept for a user with nothing being decided."""

from __future__ import annotations

import asyncio

import pytest

from services.router.slots import UserSlots


async def test_a_users_signals_beyond_their_slots_wait_and_others_do_not() -> None:
    slots = UserSlots(per_user=2)
    release = asyncio.Event()
    deciding: dict[str, int] = {"flood": 0, "quiet": 0}
    peak: dict[str, int] = {"flood": 0, "quiet": 0}
    order: list[str] = []

    async def decide(user: str, name: str, hold: bool) -> None:
        give_back = await slots.acquire(user)
        try:
            deciding[user] += 1
            peak[user] = max(peak[user], deciding[user])
            order.append(name)
            if hold:
                await release.wait()
            deciding[user] -= 1
        finally:
            give_back()

    flood = [asyncio.create_task(decide("flood", f"f{i}", hold=True)) for i in range(10)]
    await asyncio.sleep(0)
    quiet = asyncio.create_task(decide("quiet", "q", hold=False))
    await asyncio.wait_for(quiet, 1)  # decided at once, though ten of flood's are ahead of it
    assert order[:3] == ["f0", "f1", "q"] and deciding["flood"] == 2

    release.set()
    await asyncio.gather(*flood)
    assert peak == {"flood": 2, "quiet": 1}
    assert sorted(order) == sorted([f"f{i}" for i in range(10)] + ["q"])  # every one decided, none refused
    assert len(slots) == 0


async def test_a_cancelled_waiter_gives_its_place_up() -> None:
    slots = UserSlots(per_user=1)
    hold = asyncio.Event()

    async def decide() -> None:
        give_back = await slots.acquire("u")
        try:
            await hold.wait()
        finally:
            give_back()

    first = asyncio.create_task(decide())
    waiting = asyncio.create_task(decide())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    hold.set()
    await first
    assert len(slots) == 0


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError):
        UserSlots(0)


async def test_a_slot_acquired_is_given_back_once_however_often_release_is_called() -> None:
    slots = UserSlots(per_user=1)
    release = await slots.acquire("u")
    waiting = asyncio.create_task(slots.acquire("u"))
    await asyncio.sleep(0)
    assert not waiting.done() and len(slots) == 1
    release()
    release()  # a second call must not free a slot the waiter now holds
    second = await asyncio.wait_for(waiting, 1)
    third = asyncio.create_task(slots.acquire("u"))
    await asyncio.sleep(0)
    assert not third.done()
    second()
    (await asyncio.wait_for(third, 1))()
    assert len(slots) == 0
