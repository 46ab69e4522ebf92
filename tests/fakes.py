"""Test doubles shared by unit and integration tests."""

from __future__ import annotations

from nija.common.v1 import common_pb2

from services.domain.states import Status, check_transition
from services.runtime.wire import STATUS_FROM_PB


class MemoryLedger:
    """Checks every transition like the aggregator does and assigns per-user sequences."""

    def __init__(self) -> None:
        self.updates: list[common_pb2.ExecutionUpdate] = []
        self.state: dict[str, Status] = {}

    async def record(self, update):
        status = STATUS_FROM_PB[update.status]
        current = self.state.get(update.signal_id, Status.ROUTING)
        check_transition(current, status)
        self.state[update.signal_id] = status
        stored = common_pb2.ExecutionUpdate()
        stored.CopyFrom(update)
        stored.sequence = len(self.updates) + 1
        self.updates.append(stored)
        return stored


class VirtualClock:
    """Time for many concurrent tasks: `sleep` parks a task until the clock reaches its wake-up
    time, and `run` moves the clock to the next wake-up only when every task is idle."""

    def __init__(self) -> None:
        import itertools

        self.now = 0.0
        self._sleepers: list = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        import asyncio
        import heapq

        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), wake))
        await wake

    async def run(self, awaitable):
        import asyncio
        import heapq

        task = asyncio.ensure_future(awaitable)
        while not task.done():
            for _ in range(100):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            if task.done() or not self._sleepers:
                continue
            wake_at = self._sleepers[0][0]
            self.now = max(self.now, wake_at)
            while self._sleepers and self._sleepers[0][0] <= self.now:
                _, _, wake = heapq.heappop(self._sleepers)
                if not wake.done():
                    wake.set_result(None)
        return task.result()
