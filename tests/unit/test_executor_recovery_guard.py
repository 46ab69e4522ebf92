"""An order journaled but never sent, recovered after a restart, is dropped when the ledger shows
the router moved it on meanwhile (it waits for an admission only so long): taking it would place
it twice. One still routed here is recovered as before."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import grpc
from nija.aggregator.v1 import aggregator_pb2
from nija.common.v1 import common_pb2

from services.domain.signal import ExecutionMethod, Side, Signal, SignalType
from services.executor.engine import ExecutionConfig, ExecutorEngine
from services.executor.journal import Journal
from services.runtime.errors import ServiceError
from services.runtime.wire import signal_to_pb
from tests.fakes import MemoryLedger


class LedgerWithOrders(MemoryLedger):
    """MemoryLedger that also answers get_order from a table the test fills."""

    def __init__(self, orders: dict[str, aggregator_pb2.Order]) -> None:
        super().__init__()
        self.orders = orders

    async def get_order(self, user_id: str, signal_id: str, timeout_s: float | None = None) -> aggregator_pb2.Order:
        if signal_id not in self.orders:
            raise ServiceError(grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND", signal_id)
        return self.orders[signal_id]


class NoVenue:
    broker = "binance"


def _signal(signal_id: str) -> Signal:
    return Signal(signal_id, "alice", "BTC-USD", Side.BUY, Decimal(100), SignalType.ENTRY)


async def test_a_journaled_order_routed_elsewhere_is_dropped_and_one_still_here_is_recovered(tmp_path: Path) -> None:
    journal = await Journal(str(tmp_path / "journal.db")).open()
    try:
        for signal_id in ("moved", "finished", "still-here", "unknown-to-ledger"):
            await journal.admit(signal_to_pb(_signal(signal_id)), ExecutionMethod.LIMIT, 3)
        ledger = LedgerWithOrders({
            "moved": aggregator_pb2.Order(broker="kraken", status=common_pb2.EXECUTION_STATUS_QUEUED),
            "finished": aggregator_pb2.Order(broker="binance", status=common_pb2.EXECUTION_STATUS_FAILED),
            "still-here": aggregator_pb2.Order(broker="binance", status=common_pb2.EXECUTION_STATUS_ROUTING),
        })
        engine = ExecutorEngine("binance", NoVenue(), ledger, ExecutionConfig(rate_limits=False), journal=journal)  # type: ignore[arg-type]

        assert await engine.recover() == 2
        assert {s for (_, s) in engine._jobs} == {"still-here", "unknown-to-ledger"}
        assert {j.signal.signal_id for j in await journal.pending()} == {"still-here", "unknown-to-ledger"}
    finally:
        await journal.close()


class SweptMeanwhile(LedgerWithOrders):
    """The order is ROUTING here when recovery first looks, and the aggregator's sweep ends it
    FAILED right after: the recovered QUEUED is then refused as an illegal transition."""

    def __init__(self) -> None:
        super().__init__({"swept": aggregator_pb2.Order(broker="binance", status=common_pb2.EXECUTION_STATUS_ROUTING)})

    async def record(self, update):  # type: ignore[no-untyped-def]
        if update.signal_id == "swept":
            self.orders["swept"] = aggregator_pb2.Order(broker="binance", status=common_pb2.EXECUTION_STATUS_FAILED)
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION", "failed -> queued")
        return await super().record(update)


async def test_a_journaled_order_ended_by_the_sweep_while_it_is_recovered_is_never_queued(tmp_path: Path) -> None:
    journal = await Journal(str(tmp_path / "journal.db")).open()
    try:
        await journal.admit(signal_to_pb(_signal("swept")), ExecutionMethod.LIMIT, 3)
        engine = ExecutorEngine("binance", NoVenue(), SweptMeanwhile(), ExecutionConfig(rate_limits=False), journal=journal)  # type: ignore[arg-type]
        assert await engine.recover() == 0
        assert engine._jobs == {} and await journal.pending() == []
    finally:
        await journal.close()
