"""The executor's queue: priority first, then round-robin across users, FIFO per user. Pure.

  - a lower priority number always goes first (stop_loss 1 before exit 2 before entry 3 ...);
  - within a priority, users take turns: one user's burst of 500 cannot starve another user's 5;
  - within a user and priority, first in first out;
  - a per-user cap and a global cap, refused with the reason that applies.
(The seed's sorted list re-sorted on every insert, one global FIFO per broker, is what this replaces.)
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # QUEUE_FULL or USER_QUEUE_FULL


class _Level(Generic[T]):
    """One priority: each user's FIFO, and the order in which users take turns."""

    def __init__(self) -> None:
        self.per_user: dict[str, deque[T]] = {}
        self.turns: deque[str] = deque()

    def push(self, user: str, item: T) -> None:
        items = self.per_user.get(user)
        if items is None:
            items = self.per_user[user] = deque()
            self.turns.append(user)
        items.append(item)

    def pop(self) -> tuple[str, T]:
        user = self.turns.popleft()
        items = self.per_user[user]
        item = items.popleft()
        if items:
            self.turns.append(user)  # back of the line for this user's next item
        else:
            del self.per_user[user]
        return user, item


class FairQueue(Generic[T]):
    def __init__(self, max_size: int, max_per_user: int) -> None:
        self.max_size = max_size
        self.max_per_user = max_per_user
        self._levels: dict[int, _Level[T]] = {}
        self._size = 0
        self._per_user: dict[str, int] = {}

    def __len__(self) -> int:
        return self._size

    def depth_of(self, user: str) -> int:
        return self._per_user.get(user, 0)

    def check_room(self, user: str) -> None:
        """Raise QueueFull if `user` could not add an order now."""
        if self._size >= self.max_size:
            raise QueueFull("QUEUE_FULL", f"queue is full ({self.max_size} orders)")
        if self._per_user.get(user, 0) >= self.max_per_user:
            raise QueueFull("USER_QUEUE_FULL", f"user {user} already has {self.max_per_user} orders queued")

    def push(self, user: str, item: T, priority: int) -> None:
        self.check_room(user)
        self.push_recovered(user, item, priority)

    def push_recovered(self, user: str, item: T, priority: int) -> None:
        """Queue without the caps: work an executor already accepted before a restart."""
        self._levels.setdefault(priority, _Level()).push(user, item)
        self._size += 1
        self._per_user[user] = self._per_user.get(user, 0) + 1

    def pop(self) -> T | None:
        if not self._size:
            return None
        priority = min(p for p, level in self._levels.items() if level.turns)
        user, item = self._levels[priority].pop()
        if not self._levels[priority].turns:
            del self._levels[priority]
        self._size -= 1
        left = self._per_user[user] - 1
        if left:
            self._per_user[user] = left
        else:
            del self._per_user[user]
        return item

    def drain(self) -> list[T]:
        """Everything still queued, in the order it would have run."""
        items = []
        while (item := self.pop()) is not None:
            items.append(item)
        return items
