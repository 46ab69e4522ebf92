"""The executor engine against a scripted venue and an in-memory ledger: no network, no sleeping."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal

import grpc
import pytest

from services.domain.breaker import BreakerState
from services.domain.signal import ExecutionMethod, Side, Signal, SignalType
from services.domain.states import Status
from services.executor.engine import ExecutionConfig, ExecutorEngine
from services.executor.venues.base import (
    BookLevel,
    DuplicateClientOrderId,
    ExchangeUnavailable,
    FeeSchedule,
    FillReport,
    InsufficientFunds,
    Liquidity,
    Market,
    OrderBook,
    OrderNotFound,
    OrderReport,
    OrderState,
    OrderType,
)
from services.runtime.errors import ServiceError
from services.runtime.wire import STATUS_FROM_PB
from tests.fakes import MemoryLedger, VirtualClock

MARKET = Market("BTC-USD", "BTC", "USD", Decimal("0.01"), Decimal("0.0001"), Decimal("0.0001"), Decimal(10))
ASK, BID = Decimal(60000), Decimal(59990)


class ScriptedVenue:
    """Fills what crosses the single ask level; faults are switched on by the test."""

    broker = "binance"

    def __init__(self, ask_quantity: Decimal = Decimal(1)) -> None:
        self.ask_quantity = ask_quantity
        self.orders: dict[str, OrderReport] = {}
        self.create_calls = 0
        self.lose_create_response = False  # the order is placed but the answer never arrives
        self.fail_create_before_send = False  # nothing reaches the exchange
        self.insufficient_funds = False
        self.trades = 0

    async def load_markets(self):
        return {MARKET.pair: MARKET}

    async def fetch_fees(self):
        return FeeSchedule(Decimal("0.001"), Decimal("0.002"))

    async def fetch_order_book(self, pair, depth=0):
        return OrderBook(pair, [BookLevel(BID, Decimal(1))], [BookLevel(ASK, self.ask_quantity)])

    async def create_order(self, account, order):
        self.create_calls += 1
        if self.fail_create_before_send:
            raise ExchangeUnavailable("connection refused")
        if self.insufficient_funds:
            raise InsufficientFunds("not enough USD")
        if order.client_order_id in self.orders:
            raise DuplicateClientOrderId(order.client_order_id)
        crosses = order.order_type is OrderType.MARKET or order.limit_price >= ASK
        quantity = min(order.quantity, self.ask_quantity) if crosses else Decimal(0)
        fills = []
        if quantity:
            self.trades += 1
            fills.append(FillReport(f"T{self.trades}", ASK, quantity, ASK * quantity * Decimal("0.002"), "USD", Liquidity.TAKER))
        if quantity == order.quantity:
            state = OrderState.FILLED
        elif order.order_type is OrderType.MARKET:
            state = OrderState.CANCELLED  # depth ran out: the rest is cancelled
        else:
            state = OrderState.PARTIALLY_FILLED if quantity else OrderState.OPEN
        report = OrderReport(f"V{len(self.orders) + 1}", order.client_order_id, order.pair, order.side, order.order_type,
                             order.quantity, order.limit_price, state, quantity, ASK * quantity,
                             sum((f.fee for f in fills), Decimal(0)), fills)
        self.orders[order.client_order_id] = report
        if self.lose_create_response:
            raise ExchangeUnavailable("timeout after send")
        return report

    async def fetch_order(self, account, pair, client_order_id):
        if client_order_id not in self.orders:
            raise OrderNotFound(client_order_id)
        return self.orders[client_order_id]

    async def cancel_order(self, account, pair, client_order_id):
        report = dataclasses.replace(self.orders[client_order_id], state=OrderState.CANCELLED)
        self.orders[client_order_id] = report
        return report

    async def fetch_balances(self, account):
        return {}

    async def close(self):
        pass


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def signal(sid="s1", usd="600", kind=SignalType.ENTRY, user="alice"):
    return Signal(sid, user, "BTC-USD", Side.BUY, Decimal(usd), kind)


async def make_engine(venue=None, **config):
    venue = venue or ScriptedVenue()
    ledger = MemoryLedger()
    clock = FakeTime()
    engine = ExecutorEngine("binance", venue, ledger, ExecutionConfig(**config), clock=clock.clock, sleep=clock.sleep)
    await engine.load_markets()
    engine.start_workers()
    return engine, venue, ledger


async def run(engine, sig, method=ExecutionMethod.MARKET, priority=3):
    return [u async for u in engine.execute(sig, method, priority)]


def statuses(updates):
    return [STATUS_FROM_PB[u.status] for u in updates]


async def test_market_order_fills_with_the_venue_fee():
    engine, venue, ledger = await make_engine()
    updates = await run(engine, signal(usd="600"))
    assert statuses(updates) == [Status.QUEUED, Status.EXECUTING, Status.FILLED]
    final = updates[-1]
    assert final.filled_quantity == "0.01" and final.fees_total == "1.2"  # 600 * 0.2% taker
    assert updates[1].client_order_id.startswith("nija-") and updates[1].order_quantity == "0.01"
    assert engine.snapshot().successful_executions == 1
    await engine.stop()


async def test_response_lost_after_execution_is_looked_up_not_resent():
    engine, venue, ledger = await make_engine()
    venue.lose_create_response = True
    updates = await run(engine, signal())
    assert statuses(updates)[-1] is Status.FILLED
    assert venue.create_calls == 1 and len(venue.orders) == 1
    await engine.stop()


async def test_send_that_never_reached_the_exchange_is_sent_again_under_the_same_id():
    engine, venue, ledger = await make_engine()
    venue.fail_create_before_send = True
    original = venue.create_order

    async def recover_after_two(account, order):
        if venue.create_calls == 2:
            venue.fail_create_before_send = False
        return await original(account, order)

    venue.create_order = recover_after_two
    updates = await run(engine, signal())
    assert statuses(updates)[-1] is Status.FILLED
    assert venue.create_calls == 3 and len(venue.orders) == 1
    await engine.stop()


async def test_exchange_that_never_takes_the_order_fails_it_as_not_placed():
    engine, venue, ledger = await make_engine(unknown_outcome_s=5)
    venue.fail_create_before_send = True
    updates = await run(engine, signal())
    assert statuses(updates)[-1] is Status.FAILED
    assert "was not placed" in updates[-1].reason
    assert venue.orders == {}
    await engine.stop()


async def test_resubmitting_a_placed_client_order_id_reads_the_existing_order():
    engine, venue, ledger = await make_engine()
    first = await run(engine, signal(sid="again"))
    ledger.state.clear()  # a second run of the same signal (e.g. after a restart)
    second = await run(engine, signal(sid="again"))
    assert venue.create_calls == 2 and len(venue.orders) == 1  # the venue refused the second send
    assert statuses(second)[-1] is Status.FILLED
    # Both runs report the exchange's one trade; the ledger dedupes fills by venue trade id.
    assert {f.venue_trade_id for u in first + second for f in u.fills} == {"T1"}
    assert first[-1].filled_quantity == second[-1].filled_quantity == "0.01"
    await engine.stop()


async def test_depth_running_out_ends_cancelled_with_the_partial_fill():
    engine, venue, ledger = await make_engine(ScriptedVenue(ask_quantity=Decimal("0.004")))
    updates = await run(engine, signal(usd="600"))
    assert statuses(updates) == [Status.QUEUED, Status.EXECUTING, Status.PARTIAL_FILL, Status.CANCELLED]
    assert updates[-1].filled_quantity == "0.004"
    assert "filled 0.004 of 0.01" in updates[-1].reason
    await engine.stop()


async def test_limit_order_that_does_not_fill_is_cancelled_at_its_timeout():
    engine, venue, ledger = await make_engine(limit_offset_bps=Decimal(-100), limit_timeout_s=5, order_poll_s=1)
    updates = await run(engine, signal(), method=ExecutionMethod.LIMIT)
    assert statuses(updates) == [Status.QUEUED, Status.EXECUTING, Status.CANCELLED]
    assert "not filled within 5s" in updates[-1].reason
    assert all(o.state is OrderState.CANCELLED for o in venue.orders.values())
    await engine.stop()


async def test_insufficient_funds_is_rejected_and_not_the_exchanges_fault():
    engine, venue, ledger = await make_engine()
    venue.insufficient_funds = True
    for i in range(6):
        updates = await run(engine, signal(sid=f"nf-{i}"))
        assert statuses(updates)[-1] is Status.REJECTED
    assert engine.breaker.state is BreakerState.CLOSED
    await engine.stop()


async def test_five_transport_failures_open_the_breaker_and_admission_is_refused():
    engine, venue, ledger = await make_engine()

    async def down(*args, **kwargs):
        raise ExchangeUnavailable("connection refused")

    venue.fetch_order_book = venue.create_order = venue.fetch_order = down
    for i in range(5):
        # Nothing was sent for these orders: each is handed back (NOT_SENT) for another broker.
        seen = []
        with pytest.raises(ServiceError) as handed_back:
            async for update in engine.execute(signal(sid=f"t-{i}"), ExecutionMethod.MARKET, 3):
                seen.append(update)
        assert handed_back.value.reason == "NOT_SENT"
        assert statuses(seen) == [Status.QUEUED]
    assert engine.breaker.state is BreakerState.OPEN
    with pytest.raises(ServiceError) as info:
        await run(engine, signal(sid="t-5"))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.reason == "BREAKER_OPEN"
    assert venue.orders == {}
    await engine.stop()


async def test_stop_loss_jumps_the_queue():
    engine, venue, ledger = await make_engine(concurrency=1)
    gate = asyncio.Event()
    real_book = venue.fetch_order_book

    async def slow_book(pair, depth=0):
        await gate.wait()
        return await real_book(pair, depth)

    venue.fetch_order_book = slow_book
    first = asyncio.create_task(run(engine, signal(sid="busy")))
    await asyncio.sleep(0.01)
    entry = asyncio.create_task(run(engine, signal(sid="entry"), priority=3))
    stop = asyncio.create_task(run(engine, signal(sid="stop", kind=SignalType.STOP_LOSS), priority=1))
    await asyncio.sleep(0.01)
    assert engine.snapshot().queue_depth == 2
    gate.set()
    await asyncio.gather(first, entry, stop)
    executing = [u.signal_id for u in ledger.updates if STATUS_FROM_PB[u.status] is Status.EXECUTING]
    assert executing == ["busy", "stop", "entry"]
    await engine.stop()


async def test_full_queue_is_resource_exhausted():
    engine, venue, ledger = await make_engine(concurrency=1, max_queue_size=1)
    gate = asyncio.Event()

    async def blocked(pair, depth=0):
        await gate.wait()

    venue.fetch_order_book = blocked
    busy = asyncio.create_task(run(engine, signal(sid="busy")))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(run(engine, signal(sid="queued")))
    await asyncio.sleep(0.01)
    with pytest.raises(ServiceError) as info:
        await run(engine, signal(sid="overflow"))
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.reason == "QUEUE_FULL"
    busy.cancel()
    queued.cancel()
    await engine.stop()


async def test_order_sent_then_exchange_lost_fails_and_is_not_handed_back():
    engine, venue, ledger = await make_engine(unknown_outcome_s=5)

    async def down(*args, **kwargs):
        raise ExchangeUnavailable("gone")

    original = venue.create_order

    async def place_then_vanish(account, order):
        await original(account, order)
        venue.fetch_order = down
        raise ExchangeUnavailable("timeout after send")

    venue.create_order = place_then_vanish
    updates = await run(engine, signal())
    assert statuses(updates)[-1] is Status.FAILED
    assert "unknown outcome" in updates[-1].reason
    assert venue.create_calls == 1
    await engine.stop()


async def test_drain_hands_back_queued_orders_and_cancels_resting_ones():
    venue, ledger = ScriptedVenue(), MemoryLedger()
    config = ExecutionConfig(concurrency=1, limit_offset_bps=Decimal(-100), limit_timeout_s=600, order_poll_s=0.01)
    engine = ExecutorEngine("binance", venue, ledger, config)  # real clock: the order really rests
    await engine.load_markets()
    engine.start_workers()
    # The one worker is busy with a limit order that rests (priced under the ask)...
    resting = asyncio.create_task(run(engine, signal(sid="resting"), method=ExecutionMethod.LIMIT))
    await asyncio.sleep(0.05)
    # ...so this one waits in the queue.
    queued: list = []

    async def follow_queued():
        async for update in engine.execute(signal(sid="queued"), ExecutionMethod.MARKET, 3):
            queued.append(update)

    waiting = asyncio.create_task(follow_queued())
    await asyncio.sleep(0.05)
    await engine.drain(grace_s=1.0)
    with pytest.raises(ServiceError) as handed_back:
        await waiting
    assert handed_back.value.reason == "NOT_SENT" and statuses(queued) == [Status.QUEUED]
    updates = await resting
    assert statuses(updates)[-1] is Status.CANCELLED and "shutting down" in updates[-1].reason
    assert all(o.state is OrderState.CANCELLED for o in venue.orders.values())
    with pytest.raises(ServiceError) as refused:
        await run(engine, signal(sid="late"))
    assert refused.value.reason == "DRAINING"
    await engine.stop()


SLICE_QTY = Decimal("0.0833")  # $5,000 at 60,000, floored to the 0.0001 lot


async def test_twap_50k_fills_in_its_slices_over_the_horizon():
    engine, venue, ledger = await make_engine(twap_slice_usd=Decimal(5000), twap_max_slices=10, twap_interval_s=6.0)
    clock = engine._clock.__self__  # the FakeTime behind the engine
    updates = await run(engine, signal(usd="50000"), method=ExecutionMethod.TWAP)
    kinds = statuses(updates)
    assert kinds.count(Status.EXECUTING) == 10 and venue.create_calls == 10
    assert kinds.count(Status.PARTIAL_FILL) == 9 and kinds[-1] is Status.FILLED  # partial fills streamed
    assert clock.now == pytest.approx(9 * 6.0)  # 10 slices, one every 6 s: a 54 s horizon
    assert Decimal(updates[-1].filled_quantity) == 10 * SLICE_QTY
    assert Decimal(updates[-1].average_price) == ASK
    assert len({u.client_order_id for u in updates if STATUS_FROM_PB[u.status] is Status.EXECUTING}) == 10
    await engine.stop()


async def test_cancelling_a_twap_midway_leaves_exactly_the_rest_unfilled():
    engine, venue, ledger = await make_engine(twap_slice_usd=Decimal(5000), twap_max_slices=10, twap_interval_s=6.0)
    sig = signal(sid="twap-cancel", usd="50000")

    async def cancel_after_four_slices():
        while sum(1 for u in ledger.updates if STATUS_FROM_PB[u.status] is Status.PARTIAL_FILL) < 4:
            await asyncio.sleep(0)
        await engine.cancel("alice", "twap-cancel", "client asked")

    canceller = asyncio.create_task(cancel_after_four_slices())
    updates = await run(engine, sig, method=ExecutionMethod.TWAP)
    await canceller
    final = updates[-1]
    assert STATUS_FROM_PB[final.status] is Status.CANCELLED and "4 of 10 slices sent" in final.reason
    assert venue.create_calls == 4
    slice_quantity = sum(o.filled_quantity for o in venue.orders.values())
    assert Decimal(final.filled_quantity) == slice_quantity == Decimal(final.order_quantity)
    # Filled: exactly the 4 slices sent; the 6 never sent are exactly what remains unfilled.
    assert Decimal(final.filled_quantity) == 4 * SLICE_QTY
    with pytest.raises(ServiceError) as info:
        await engine.cancel("alice", "twap-cancel", "again")
    assert info.value.reason == "NO_OPEN_ORDER"
    await engine.stop()


async def test_cancelling_a_queued_order_never_sends_it():
    engine, venue, ledger = await make_engine(concurrency=1)
    gate = asyncio.Event()
    real_book = venue.fetch_order_book

    async def held(pair, depth=0):
        await gate.wait()
        return await real_book(pair, depth)

    venue.fetch_order_book = held
    busy = asyncio.create_task(run(engine, signal(sid="busy")))
    waiting = asyncio.create_task(run(engine, signal(sid="waiting")))
    await asyncio.sleep(0.01)
    await engine.cancel("alice", "waiting", "changed my mind")
    gate.set()
    await busy
    updates = await waiting
    assert statuses(updates) == [Status.QUEUED, Status.CANCELLED]
    assert venue.create_calls == 1  # only "busy" reached the exchange
    await engine.stop()


async def test_orders_keep_to_each_accounts_budget_and_users_do_not_wait_for_each_other():
    """Binance: 50 orders per 10 s per account. A sends 120 at once, B sends 5 a moment later."""
    venue = ScriptedVenue(ask_quantity=Decimal(1000))
    ledger, clock = MemoryLedger(), VirtualClock()
    engine = ExecutorEngine("binance", venue, ledger, ExecutionConfig(concurrency=16), clock=clock.clock, sleep=clock.sleep)
    await engine.load_markets()
    engine.start_workers()
    placed: list[tuple[float, str]] = []
    real_create = venue.create_order

    async def timed_create(account, order):
        placed.append((clock.now, account.account_id))
        return await real_create(account, order)

    venue.create_order = timed_create

    async def scenario():
        a = [asyncio.create_task(run(engine, signal(sid=f"a{i}", user="user-a", usd="60"))) for i in range(120)]
        await clock.sleep(0.5)
        b = [asyncio.create_task(run(engine, signal(sid=f"b{i}", user="user-b", usd="60"))) for i in range(5)]
        await asyncio.gather(*a, *b)

    await clock.run(scenario())
    a_times = sorted(t for t, acct in placed if acct == "user-a")
    b_times = sorted(t for t, acct in placed if acct == "user-b")
    assert len(a_times) == 120 and len(b_times) == 5
    for i, start in enumerate(a_times):  # never more than 50 of A's orders in any 10 s
        assert sum(1 for t in a_times[i:] if t < start + 10.0) <= 50
    assert a_times[-1] >= 20.0  # 120 orders need three 10-second windows
    assert max(b_times) < 1.0  # B went at once, while A waited for its budget
    await engine.stop()


def limit_signal(sid: str, price: str, expiry: int, convert: bool) -> Signal:
    return dataclasses.replace(signal(sid=sid), limit_price=Decimal(price), limit_expiry_s=expiry, convert_on_expiry=convert)


async def test_signal_limit_price_rests_then_expires_cancelled():
    engine, venue, ledger = await make_engine(order_poll_s=1)
    updates = await run(engine, limit_signal("lim-1", "59000.129", 30, False), method=ExecutionMethod.LIMIT)
    order = next(iter(venue.orders.values()))
    assert order.limit_price == Decimal("59000.12")  # a buy's price goes down to the tick, never up
    assert statuses(updates)[-1] is Status.CANCELLED and "not filled within 30s" in updates[-1].reason
    await engine.stop()


async def test_expired_limit_rest_converts_to_market():
    engine, venue, ledger = await make_engine(order_poll_s=1)
    updates = await run(engine, limit_signal("lim-2", "59000", 10, True), method=ExecutionMethod.LIMIT)
    assert statuses(updates) == [Status.QUEUED, Status.EXECUTING, Status.EXECUTING, Status.FILLED]
    assert "goes at market" in updates[2].reason
    kinds = sorted(o.order_type.value for o in venue.orders.values())
    assert kinds == ["limit", "market"] and len({o.client_order_id for o in venue.orders.values()}) == 2
    assert Decimal(updates[-1].filled_quantity) == Decimal(updates[-1].order_quantity) == Decimal("0.01")
    await engine.stop()


class ManyPairsVenue(ScriptedVenue):
    """Four pairs listed; records which books were read, in order."""

    PAIRS = ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD")

    def __init__(self) -> None:
        super().__init__(ask_quantity=Decimal(1000))
        self.book_reads: list[str] = []

    async def load_markets(self):
        return {p: dataclasses.replace(MARKET, pair=p, base=p.split("-")[0]) for p in self.PAIRS}

    async def fetch_order_book(self, pair, depth=0):
        self.book_reads.append(pair)
        return await super().fetch_order_book(pair, depth)


async def test_a_pair_orders_trade_is_refreshed_before_its_quote_goes_stale():
    """Quotes are refreshed oldest first, except that a pair orders are trading goes first once its
    quote is half way to stale: its orders then never read the book (and wait for budget) themselves."""
    venue = ManyPairsVenue()
    clock = FakeTime()
    engine = ExecutorEngine("binance", venue, MemoryLedger(), ExecutionConfig(rate_limits=False, quote_max_age_s=2.0),
                            clock=clock.clock, sleep=clock.sleep)
    await engine.load_markets()
    engine.start_workers()
    for pair in ManyPairsVenue.PAIRS:  # read at t = 0, 1, 2, 3: BTC's quote is the oldest
        clock.now = float(ManyPairsVenue.PAIRS.index(pair))
        await engine._refresh_quote(pair)
    venue.book_reads.clear()

    clock.now = 3.5  # SOL is traded, its quote 1.5 s old: not read by the order itself
    updates = await run(engine, dataclasses.replace(signal(sid="sol-1", usd="100"), pair="SOL-USD"))
    assert statuses(updates)[-1] is Status.FILLED and venue.book_reads == []

    await engine.refresh_quotes()
    assert venue.book_reads[0] == "SOL-USD"  # traded and half way to stale: ahead of older BTC
    assert venue.book_reads[1:] == ["BTC-USD", "ETH-USD", "XRP-USD"]  # then oldest first

    venue.book_reads.clear()
    clock.now = 3.6  # every quote just read (no budget here): SOL is not urgent any more
    await engine.refresh_quotes()
    assert venue.book_reads[0] == "BTC-USD"  # all equally fresh: in listing order, SOL no longer first

    venue.book_reads.clear()
    clock.now = 20.0  # no order for SOL for 10 s: no longer ahead of the oldest
    for pair in ("BTC-USD", "ETH-USD", "XRP-USD"):
        await engine._refresh_quote(pair)
    clock.now = 21.0
    venue.book_reads.clear()
    await engine.refresh_quotes()
    assert venue.book_reads[0] == "SOL-USD"  # simply the oldest now
    clock.now = 21.1
    venue.book_reads.clear()
    await engine.refresh_quotes()
    assert venue.book_reads[0] == "BTC-USD"
    await engine.stop()
