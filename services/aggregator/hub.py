"""Live fan-out of committed updates to the watchers of each user, in-process.

`publish` never waits: every watcher has a bounded buffer, and a watcher whose buffer is full is
cut off (its `next()` raises `Overflowed`) instead of slowing the writer or the other watchers.
The ledger publishes on the event loop in commit order, so each buffer holds a user's updates in
sequence order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from nija.common.v1 import common_pb2

from services.runtime import metrics

log = logging.getLogger(__name__)


class Overflowed(Exception):
    """The watcher fell `capacity` updates behind and was cut off."""


class Subscription:
    """One watcher's live feed of one user's updates. Use as a context manager."""

    def __init__(self, hub: Hub, user_id: str, capacity: int) -> None:
        self.user_id = user_id
        self._hub = hub
        self._capacity = capacity
        self._items: deque[common_pb2.ExecutionUpdate] = deque()
        self._wakeup = asyncio.Event()
        self.overflowed = False

    def offer(self, update: common_pb2.ExecutionUpdate) -> bool:
        """Buffer `update`; False (and cut off) when the buffer is already full."""
        if self.overflowed:
            return False
        if len(self._items) >= self._capacity:
            # What is buffered can no longer be delivered without a gap: drop it.
            self.overflowed = True
            self._items.clear()
            self._wakeup.set()
            return False
        self._items.append(update)
        self._wakeup.set()
        return True

    async def next(self) -> common_pb2.ExecutionUpdate:
        while not self._items:
            if self.overflowed:
                raise Overflowed
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    def close(self) -> None:
        self._hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("watcher capacity must be at least 1")
        self.capacity = capacity
        self._watchers: dict[str, set[Subscription]] = {}

    def subscribe(self, user_id: str) -> Subscription:
        subscription = Subscription(self, user_id, self.capacity)
        self._watchers.setdefault(user_id, set()).add(subscription)
        metrics.STREAM_WATCHERS.inc()
        return subscription

    def publish(self, update: common_pb2.ExecutionUpdate) -> None:
        watchers = self._watchers.get(update.user_id)
        if not watchers:  # the common case for a writer's update: nobody is watching that user
            return
        for subscription in list(watchers):
            if not subscription.offer(update):
                self._remove(subscription)
                log.warning(
                    "watcher too slow, cut off",
                    extra={"user_id": update.user_id, "capacity": self.capacity},
                )

    def watchers(self, user_id: str) -> int:
        return len(self._watchers.get(user_id, ()))

    def _remove(self, subscription: Subscription) -> None:
        watchers = self._watchers.get(subscription.user_id)
        if watchers is None or subscription not in watchers:
            return
        watchers.discard(subscription)
        metrics.STREAM_WATCHERS.dec()
        if not watchers:
            del self._watchers[subscription.user_id]
