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
