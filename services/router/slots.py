"""At most so many signals of one user being decided at once; the user's others wait their turn.

A decision costs the router and the permission service real work (a reservation is a database
transaction), so a user who floods at full speed would otherwise fill both with their own
decisions and every other user's signals would queue behind them. Waiting is not refusing: a
signal that waits for its user's slot is decided exactly as it would have been, later, so no
semantics change (idempotent resubmission included); a user's flood only slows that user.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class UserSlots:
    def __init__(self, per_user: int) -> None:
        if per_user < 1:
            raise ValueError("per_user must be at least 1")
        self._per_user = per_user
        # user -> (their semaphore, signals holding or waiting for it): dropped when none are.
        self._users: dict[str, tuple[asyncio.Semaphore, int]] = {}

    async def acquire(self, user_id: str) -> Callable[[], None]:
        """Wait for one of the user's slots; returns what gives it back (once, however often it
        is called). A waiter that is cancelled gives its place up."""
        semaphore, count = self._users.get(user_id) or (asyncio.Semaphore(self._per_user), 0)
        self._users[user_id] = (semaphore, count + 1)
        try:
            await semaphore.acquire()
        except BaseException:
            self._forget(user_id)
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                semaphore.release()
                self._forget(user_id)

        return release

    def _forget(self, user_id: str) -> None:
        semaphore, count = self._users[user_id]
        if count == 1:
            del self._users[user_id]
        else:
            self._users[user_id] = (semaphore, count - 1)

    def __len__(self) -> int:
        """Users with a signal being decided or waiting (tests: nothing is kept for idle users)."""
        return len(self._users)
