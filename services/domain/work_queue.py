"""A bounded priority queue: lower priority number first, FIFO within a priority. Pure.

(The seed's sorted list re-sorted on every insert becomes a heap keyed by (priority, arrival).)
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    pass


class PriorityWorkQueue(Generic[T]):
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._heap: list[tuple[int, int, T]] = []
        self._arrival = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: T, priority: int) -> None:
        if len(self._heap) >= self.max_size:
            raise QueueFull(f"queue is full ({self.max_size})")
        heapq.heappush(self._heap, (priority, next(self._arrival), item))

    def pop(self) -> T | None:
        if not self._heap:
            return None
        return heapq.heappop(self._heap)[2]
