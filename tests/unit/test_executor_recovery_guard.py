"""An order journaled but never sent, recovered after a restart, is dropped when the ledger shows
the router moved it on meanwhile (it waits for an admission only so long): taking it would place
it twice. One still routed here is recovered as before."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2
from nija.common.v1 import common_pb2

from services.domain.breaker import BreakerState
from services.domain.signal import ExecutionMethod, Side, Signal, SignalType
from services.domain.states import Status
from services.executor.engine import RECOVERY_CONCURRENCY, ExecutionConfig, ExecutorEngine
from services.executor.journal import Journal
from services.executor.venues.base import OrderRequest, OrderType
from services.runtime.errors import ServiceError
from services.runtime.wire import STATUS_FROM_PB, signal_to_pb
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


async def _until(predicate, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in time")


async def test_a_recovered_order_the_executor_cannot_take_ends_failed_instead_of_being_handed_to_nobody(
    tmp_path: Path,
) -> None:
    # Seen in a 10-minute `nija chaos` run: an executor restarted during its exchange's 5xx storm
    # recovered three orders, found its breaker open and handed them back, to a router that no
    # longer followed them: they stayed QUEUED for good. Nothing was sent, so they end FAILED.
    journal = await Journal(str(tmp_path / "journal.db")).open()
    ledger = LedgerWithOrders({"orphan": aggregator_pb2.Order(broker="binance", status=common_pb2.EXECUTION_STATUS_ROUTING)})
    engine = ExecutorEngine("binance", NoVenue(), ledger, ExecutionConfig(rate_limits=False, concurrency=1), journal=journal)  # type: ignore[arg-type]
    try:
        await journal.admit(signal_to_pb(_signal("orphan")), ExecutionMethod.MARKET, 3)
        assert await engine.recover() == 1
        while engine.breaker.state is not BreakerState.OPEN:
            engine.breaker.record_failure()
        engine.start_workers()

        await _until(lambda: ledger.state.get("orphan") is Status.FAILED)
        assert [STATUS_FROM_PB[u.status] for u in ledger.updates] == [Status.QUEUED, Status.FAILED]
        assert "circuit breaker is open; nothing was sent" in ledger.updates[-1].reason
        assert await journal.pending() == [] and engine._jobs == {}
    finally:
        await engine.stop()
        await journal.close()


async def test_a_recovered_order_with_a_leg_sent_waits_out_an_open_breaker_instead(tmp_path: Path) -> None:
    # Its leg may have traded: it is looked up once the exchange answers again, never ended unseen.
    journal = await Journal(str(tmp_path / "journal.db")).open()
    ledger = LedgerWithOrders({"sent": aggregator_pb2.Order(broker="binance", status=common_pb2.EXECUTION_STATUS_EXECUTING)})
    engine = ExecutorEngine("binance", NoVenue(), ledger, ExecutionConfig(rate_limits=False, concurrency=1), journal=journal)  # type: ignore[arg-type]
    try:
        await journal.admit(signal_to_pb(_signal("sent")), ExecutionMethod.MARKET, 3)
        request = OrderRequest("nija-sent-0", "BTC-USD", Side.BUY, OrderType.MARKET, Decimal("0.001"))
        await journal.leg("alice", "sent", 0, request)
        assert await engine.recover() == 1
        while engine.breaker.state is not BreakerState.OPEN:
            engine.breaker.record_failure()
        engine.start_workers()

        await _until(lambda: engine._deferred == 1)
        assert ledger.updates == [] and [j.signal.signal_id for j in await journal.pending()] == ["sent"]
        assert ("alice", "sent") in engine._jobs
    finally:
        await engine.stop()
        await journal.close()


class LedgerAwayOnce(LedgerWithOrders):
    """The ledger refuses the first QUEUED of `flaky` as UNAVAILABLE (the aggregator restarting)."""

    def __init__(self) -> None:
        super().__init__({})
        self.refused = False

    async def record(self, update):  # type: ignore[no-untyped-def]
        if update.signal_id == "flaky" and not self.refused:
            self.refused = True
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "the ledger is restarting")
        return await super().record(update)


async def test_a_recovery_cut_short_by_the_ledger_takes_the_rest_when_run_again(tmp_path: Path) -> None:
    # In a 10-minute chaos run on PostgreSQL the one failure ended the executor's refresh loop
    # and 548 journaled orders stayed QUEUED for good; now the loop runs recover() again.
    journal = await Journal(str(tmp_path / "journal.db")).open()
    ledger = LedgerAwayOnce()
    engine = ExecutorEngine("binance", NoVenue(), ledger, ExecutionConfig(rate_limits=False), journal=journal)  # type: ignore[arg-type]
    try:
        for signal_id in ("first", "flaky", "last"):
            await journal.admit(signal_to_pb(_signal(signal_id)), ExecutionMethod.MARKET, 3)
        with pytest.raises(ServiceError):  # raised once the others were tried
            await engine.recover()
        assert ("alice", "flaky") not in engine._jobs  # not taken, so not skipped next time
        assert {s for (_, s) in engine._jobs} == {"first", "last"}

        assert await engine.recover() == 1  # flaky; the others are already queued
        assert {s for (_, s) in engine._jobs} == {"first", "flaky", "last"}
        assert sorted(u.signal_id for u in ledger.updates) == ["first", "flaky", "last"]  # one QUEUED each
        assert len(engine._queue) == 3
    finally:
        await journal.close()


async def test_a_journaled_order_with_a_leg_sent_that_the_ledger_shows_ended_is_dropped(tmp_path: Path) -> None:
    # Killed between the ledger's FILLED and the journal's done: recovering it only failed on
    # "illegal transition filled -> executing", at every restart.
    journal = await Journal(str(tmp_path / "journal.db")).open()
    ledger = LedgerWithOrders({
        "done": aggregator_pb2.Order(broker="binance", status=common_pb2.EXECUTION_STATUS_FILLED),
        "open": aggregator_pb2.Order(broker="binance", status=common_pb2.EXECUTION_STATUS_EXECUTING),
    })
    engine = ExecutorEngine("binance", NoVenue(), ledger, ExecutionConfig(rate_limits=False), journal=journal)  # type: ignore[arg-type]
    try:
        for signal_id in ("done", "open"):
            await journal.admit(signal_to_pb(_signal(signal_id)), ExecutionMethod.MARKET, 3)
            request = OrderRequest(f"nija-{signal_id}-0", "BTC-USD", Side.BUY, OrderType.MARKET, Decimal("0.001"))
            await journal.leg("alice", signal_id, 0, request)
        assert await engine.recover() == 1
        assert [j.signal.signal_id for j in await journal.pending()] == ["open"]
    finally:
        await journal.close()


class SlowLedger(MemoryLedger):
    """Holds every record until `go` is set (an aggregator answering slowly)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()
        self.go = asyncio.Event()

    async def record(self, update):  # type: ignore[no-untyped-def]
        self.arrived.set()
        await self.go.wait()
        return await super().record(update)


class OneMarket(NoVenue):
    async def load_markets(self):  # type: ignore[no-untyped-def]
        from services.executor.venues.base import Market

        return {"BTC-USD": Market("BTC-USD", "BTC", "USD", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal(1))}

    async def fetch_fees(self):  # type: ignore[no-untyped-def]
        return {}


async def test_an_order_whose_caller_goes_away_while_it_is_admitted_is_still_queued(tmp_path: Path) -> None:
    # A router killed while the executor wrote the journal and the ledger's QUEUED cancelled the
    # admission between the two: the order stayed QUEUED with no worker ever to take it.
    journal = await Journal(str(tmp_path / "journal.db")).open()
    ledger = SlowLedger()
    engine = ExecutorEngine("binance", OneMarket(), ledger, ExecutionConfig(rate_limits=False), journal=journal)  # type: ignore[arg-type]
    try:
        await engine.load_markets()

        async def follow() -> None:
            async for _ in engine.execute(_signal("s1"), ExecutionMethod.MARKET, 3):
                pass

        caller = asyncio.create_task(follow())
        await asyncio.wait_for(ledger.arrived.wait(), 5)  # the QUEUED is on its way to the ledger
        caller.cancel()
        ledger.go.set()
        await _until(lambda: len(engine._queue) == 1)
        assert [u.signal_id for u in ledger.updates] == ["s1"] and ("alice", "s1") in engine._jobs
    finally:
        await engine.stop()
        await journal.close()


class LoadedLedger(LedgerWithOrders):
    """A loaded ledger: each get_order waits until the test lets them all answer."""

    def __init__(self) -> None:
        super().__init__({})
        self.asking, self.most_at_once = 0, 0
        self.answer = asyncio.Event()

    async def get_order(self, user_id: str, signal_id: str, timeout_s: float | None = None) -> aggregator_pb2.Order:
        self.asking += 1
        self.most_at_once = max(self.most_at_once, self.asking)
        try:
            await self.answer.wait()
            return await super().get_order(user_id, signal_id, timeout_s)
        finally:
            self.asking -= 1


async def test_journal_entries_are_recovered_many_at_once_not_one_ledger_round_trip_after_another(tmp_path: Path) -> None:
    # One after another, 50 entries at the 1-4 s a loaded ledger took per answer kept executors
    # out of service for minutes in a chaos run on PostgreSQL (every broker unhealthy for 71 s).
    journal = await Journal(str(tmp_path / "journal.db")).open()
    ledger = LoadedLedger()
    engine = ExecutorEngine("binance", NoVenue(), ledger, ExecutionConfig(rate_limits=False), journal=journal)  # type: ignore[arg-type]
    try:
        for n in range(40):
            await journal.admit(signal_to_pb(_signal(f"s{n}")), ExecutionMethod.MARKET, 3)
        recovering = asyncio.create_task(engine.recover())
        while ledger.asking < RECOVERY_CONCURRENCY:
            await asyncio.sleep(0)
        ledger.answer.set()
        assert await recovering == 40
        assert ledger.most_at_once == RECOVERY_CONCURRENCY and len(engine._queue) == 40
    finally:
        await journal.close()
