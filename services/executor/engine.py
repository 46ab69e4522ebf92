"""The executor engine: one broker's queue, breaker, statistics and order execution.

`execute(signal, method, priority)` admits an order (or attaches to the one already running for
that signal), records QUEUED, and yields every update of the order as the aggregator persisted it.
Workers take orders by priority and drive them on the venue:

  EXECUTING (client order id persisted before the order is sent)
  -> venue order -> PARTIAL_FILL* -> FILLED | CANCELLED (depth ran out / limit timed out)
                                  | REJECTED (the venue refused the order's content or funds)
                                  | FAILED (the exchange was unavailable)

The order's life does not depend on the caller's stream: a caller that disconnects can attach
again by submitting the same signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Protocol, TypeVar

import grpc
from nija.common.v1 import common_pb2

from services.domain.breaker import BreakerState, CircuitBreaker
from services.domain.ids import client_order_id
from services.domain.money import (
    ZERO,
    ceil_to_step,
    floor_to_step,
    fmt,
    quantize_derived,
)
from services.domain.performance import LatencyAverage
from services.domain.rate_limits import RateLimiter, TokenBucket, profile_for, with_follow_ups
from services.domain.retry import backoff
from services.domain.signal import PARENT_KEY, ExecutionMethod, Side, Signal
from services.domain.states import Status
from services.domain.work_queue import FairQueue, QueueFull
from services.executor.journal import Journal, JournaledJob
from services.executor.venues.base import (
    Account,
    AuthenticationFailed,
    Balance,
    BookLevel,
    DuplicateClientOrderId,
    ExchangeRejected,
    ExchangeUnavailable,
    FeeSchedule,
    FillReport,
    InsufficientFunds,
    InvalidOrder,
    Market,
    OrderBook,
    OrderNotFound,
    OrderReport,
    OrderRequest,
    OrderType,
    RateLimited,
    Venue,
    VenueError,
)
from services.runtime import metrics, tracing
from services.runtime.aio import wait_set
from services.runtime.errors import ServiceError, precondition
from services.runtime.wire import (
    SIDE_TO_PB,
    STATUS_FROM_PB,
    STATUS_TO_PB,
    now_pb,
    signal_from_pb,
    signal_to_pb,
)

log = logging.getLogger(__name__)

BPS = Decimal("0.0001")
# Leg numbers of market orders that carry an expired limit order's rest (leg + this).
CONVERTED_LEG = 1000
# Whose budget public requests (books, markets) are charged to: only the per-IP limits apply.
EXECUTOR_ACCOUNT = "executor"
R = TypeVar("R")
_BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class UpdateRecorder(Protocol):
    """The ledger, as the executor sees it: persists an update and returns it with its sequence."""

    async def record(self, update: common_pb2.ExecutionUpdate) -> common_pb2.ExecutionUpdate: ...


#: A pair is being traded while an order needed its price within this many seconds.
HOT_PAIR_S = 10.0
#: Journal entries recovered at once after a restart (each is a ledger round trip or two).
RECOVERY_CONCURRENCY = 16


@dataclasses.dataclass(frozen=True)
class ExecutionConfig:
    max_queue_size: int = 1000
    max_queue_per_user: int = 500
    concurrency: int = 16
    # Marketable limit orders cross the touch by this much; the rest rests at the limit.
    limit_offset_bps: Decimal = Decimal(5)
    limit_timeout_s: float = 30.0
    order_poll_s: float = 0.25
    twap_slice_usd: Decimal = Decimal(5000)
    twap_max_slices: int = 10
    twap_interval_s: float = 1.0
    # Visible liquidity counts levels within this band around the mid.
    liquidity_band_bps: Decimal = Decimal(100)
    # An order is sized from the last book read if it is at most this old, else the book is read.
    quote_max_age_s: float = 2.0
    # Background book reads (for routers' liquidity) per second, under the rate limits.
    book_refresh_per_s: float = 2.0
    breaker_failures: int = 5
    breaker_open_s: float = 60.0
    # Hold every request to the exchange's published limits (off: for tests that flood one account).
    rate_limits: bool = True
    # A 429 is backed off and the request repeated up to this many times before the order fails.
    rate_limited_retries: int = 5
    # How long an order whose send had an unknown outcome is looked up (and re-sent when the
    # exchange says it does not exist) before it is given up as FAILED.
    unknown_outcome_s: float = 30.0
    lookup_backoff_s: float = 0.1
    lookup_backoff_max_s: float = 2.0


@dataclasses.dataclass(frozen=True)
class PairQuote:
    best_bid: Decimal
    best_ask: Decimal
    bid_liquidity_usd: Decimal
    ask_liquidity_usd: Decimal
    # The levels within the band, best first: what a router walks to estimate slippage.
    bids: tuple[BookLevel, ...] = ()
    asks: tuple[BookLevel, ...] = ()
    # When the book was read (the engine's clock).
    at: float = 0.0


_NO_QUOTE = PairQuote(ZERO, ZERO, ZERO, ZERO)


@dataclasses.dataclass(frozen=True)
class ExecutorSnapshot:
    broker: str
    fees: FeeSchedule
    pairs: dict[str, PairQuote]
    queue_depth: int
    max_queue_size: int
    active_executions: int
    total_executions: int
    successful_executions: int
    avg_latency_ms: float
    breaker_state: BreakerState
    withdrawal_fees: dict[str, Decimal]
    version: int
    #: The venue trades with each user's own keys (a live exchange).
    requires_api_keys: bool = False

    @property
    def success_rate(self) -> float:
        if self.total_executions == 0:
            return 1.0
        return self.successful_executions / self.total_executions


class _Job:
    """One signal's order on this broker, and the updates it has produced so far."""

    def __init__(self, signal: Signal, method: ExecutionMethod, priority: int) -> None:
        self.signal = signal
        self.method = method
        self.priority = priority
        self.updates: list[common_pb2.ExecutionUpdate] = []
        self.done = False
        self._changed = asyncio.Event()
        self.events = 0
        self.order_quantity = ZERO
        self.filled_quantity = ZERO
        self.filled_notional = ZERO
        self.fees_total = ZERO
        self.seen_trades: set[str] = set()
        self.client_order_id = ""
        self.venue_order_id = ""
        self.released = ""
        self.status = Status.PENDING
        # Set when the executor shuts down: a resting order is cancelled instead of waited for.
        self.wind_down = False
        # After a restart: the venue orders this job had already sent (or was sending), by leg.
        self.recovered: dict[int, OrderRequest] = {}
        # Taken from the journal after a restart: no router follows its Execute call.
        self.from_journal = False
        # Set by a cancel request: no further slice is sent, a resting order is cancelled.
        self.cancel_reason = ""
        self.cancelled = asyncio.Event()
        self.started = False
        # The user's account on the venue (whose keys sign), resolved when the job first runs.
        self.account: Account | None = None
        # The trace of the Execute call that admitted it: the worker's spans continue it.
        self.trace = tracing.capture()
        self.waiting_since_ns = tracing.now_ns()

    def trace_attributes(self) -> dict[str, str]:
        s = self.signal
        return {"signal_id": s.signal_id, "user_id": s.user_id, "pair": s.pair, "method": self.method.value}

    def publish(self, update: common_pb2.ExecutionUpdate, terminal: bool) -> None:
        self.updates.append(update)
        self.done = self.done or terminal
        self._changed.set()
        self._changed = asyncio.Event()

    def publish_nothing(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def release(self, reason: str) -> None:
        """Hand the order back untouched: nothing was sent to the exchange, so the router may
        route it elsewhere. Followers get UNAVAILABLE with reason NOT_SENT."""
        self.released = reason
        self.done = True
        self.publish_nothing()

    async def follow(self) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        index = 0
        while True:
            while index < len(self.updates):
                yield self.updates[index]
                index += 1
            if self.released:
                raise ServiceError(grpc.StatusCode.UNAVAILABLE, "NOT_SENT", self.released)
            if self.done:
                return
            await self._changed.wait()


class _LegOutcome(Exception):
    """A leg ended the order: status and reason of the terminal update."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ExecutorEngine:
    def __init__(
        self,
        broker: str,
        venue: Venue,
        ledger: UpdateRecorder,
        config: ExecutionConfig,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        journal: Journal | None = None,
        accounts: Callable[[str], Awaitable[Account]] | None = None,
    ) -> None:
        self.broker = broker
        # user id -> the user's account with its API keys (default: keyless, for the simulator).
        self._accounts = accounts or _keyless_account
        #: pair -> the book read in flight for orders waiting to be priced
        self._book_reads: dict[str, asyncio.Future[OrderBook]] = {}
        # When an order last needed each pair's price (the engine's clock): see refresh_quotes.
        self._ordered_at: dict[str, float] = {}
        # Kill switches as the permission service last told us: user -> reason, and the global one.
        self._killed_users: dict[str, str] = {}
        self._killed_all = ""
        self._journal = journal
        # Update ids carry this run's id: a restarted executor never reuses an earlier run's ids.
        self._run_id = secrets.token_hex(4)
        self._rng = random.Random()
        # What each operation costs against the exchange's budgets, with whatever this venue
        # spends on top of the operation's own request (a live venue's read-backs).
        profile = with_follow_ups(profile_for(broker), getattr(venue, "follow_up_costs", {}))
        self._limits = RateLimiter(profile) if config.rate_limits else None
        self._read_once: set[str] = set()  # pairs whose book has been read at least once
        self._deferred = 0  # jobs waiting for their account's order budget, outside the queue
        self._background: set[asyncio.Future[object]] = set()
        self._refresh_budget = TokenBucket(max(1.0, config.book_refresh_per_s), config.book_refresh_per_s)
        self._venue = venue
        self._ledger = ledger
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self.breaker = CircuitBreaker(clock, config.breaker_failures, config.breaker_open_s)
        self._latency = LatencyAverage()
        self._queue: FairQueue[_Job] = FairQueue(config.max_queue_size, config.max_queue_per_user)
        self._work_ready = asyncio.Semaphore(0)
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._markets: dict[str, Market] = {}
        self._fees = FeeSchedule(ZERO, ZERO)
        self._quotes: dict[str, PairQuote] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._active = 0
        self._total = 0
        self._successful = 0
        self.version = 0
        self._changed = asyncio.Event()
        self._draining = False

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return bool(self._markets)

    @property
    def quotes_complete(self) -> bool:
        """Every listed pair's book has been read at least once (routers can judge liquidity)."""
        return bool(self._markets) and self._read_once >= set(self._markets)

    async def load_markets(self) -> None:
        self._markets = await self._timed("markets", EXECUTOR_ACCOUNT, self._venue.load_markets)
        self._fees = await self._timed("markets", EXECUTOR_ACCOUNT, self._venue.fetch_fees)
        log.info("markets loaded", extra={"broker": self.broker, "pairs": sorted(self._markets)})

    def start_workers(self) -> None:
        self._workers = [
            asyncio.create_task(self._worker(), name=f"{self.broker}-worker-{i}")
            for i in range(self._config.concurrency)
        ]

    async def drain(self, grace_s: float) -> None:
        """Shutting down: refuse new orders, hand queued ones back to their routers (nothing was
        sent for them), let running ones finish; those still resting when half the grace is
        gone are cancelled at the venue and end CANCELLED, so no caller is left waiting."""
        self._draining = True
        for job in self._queue.drain():
            self._jobs.pop((job.signal.user_id, job.signal.signal_id), None)
            await self._hand_back(job, f"{self.broker} executor is shutting down")
        self._touch()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s / 2
        while self._active and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for job in list(self._jobs.values()):
            job.wind_down = True
        while self._active and loop.time() < deadline + grace_s / 4:
            await asyncio.sleep(0.02)

    async def account_of(self, user_id: str) -> Account:
        return await self._accounts(user_id)

    async def check_account(self, user_id: str) -> dict[str, Balance]:
        """Read the user's balances with their stored keys, within the exchange's rate limits:
        shows the keys work. Typed venue errors come back as they are (AuthenticationFailed...)."""
        account = await self._accounts(user_id)
        return await self._timed("balances", account.account_id, lambda: self._venue.fetch_balances(account))

    async def cancel(self, user_id: str, signal_id: str, reason: str) -> None:
        """Stop a signal's order: queued -> CANCELLED now; running -> at its next step."""
        job = self._jobs.get((user_id, signal_id))
        if job is None or job.done:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND, "NO_OPEN_ORDER", f"no open order for {signal_id} on {self.broker}"
            )
        job.cancel_reason = reason or "cancelled on request"
        job.cancelled.set()  # a TWAP waiting for its next slice stops waiting
        if job.status is Status.QUEUED and not job.started:
            # Never started: nothing was sent. The worker that pops it skips it.
            await self._finish(job, Status.CANCELLED, job.cancel_reason)

    def kill_reason(self, user_id: str) -> str:
        """Why this user may not trade now ('' when they may)."""
        return self._killed_all or self._killed_users.get(user_id, "")

    async def apply_kill_switches(self, global_reason: str, users: dict[str, str]) -> int:
        """The kill switches changed: new orders of a killed user are refused, and every open
        order of theirs is cancelled (queued ones at once; resting orders and TWAPs at their
        next step). Returns how many orders were told to stop."""
        self._killed_all, self._killed_users = global_reason, dict(users)
        stopped = 0
        for (user_id, signal_id), job in list(self._jobs.items()):
            reason = self.kill_reason(user_id)
            if reason and not job.done and not job.cancel_reason:
                with contextlib.suppress(ServiceError):  # finished meanwhile
                    await self.cancel(user_id, signal_id, reason)
                    stopped += 1
        if stopped:
            log.warning("kill switch: orders stopped", extra={"broker": self.broker, "count": stopped})
        return stopped

    async def recover(self) -> int:
        """After a restart: queue again every job the journal holds. Legs already sent are looked
        up by client order id before anything is sent (filled while we were down: the fills are
        recorded; never placed: sent now under the same id; open: followed). Returns the count.

        Each entry costs a ledger round trip or two, so up to RECOVERY_CONCURRENCY are recovered
        at once: one after another, 50 entries at the 1-4 s a loaded ledger took per answer kept
        an executor out of service (quotes not refreshed) for minutes in a chaos run. An entry
        that fails is left for the next run, which skips what this one took; the first failure
        is raised once every entry has been tried."""
        journal = self._journal
        if journal is None:
            return 0
        slots = asyncio.Semaphore(RECOVERY_CONCURRENCY)

        async def one(entry: JournaledJob) -> bool:
            async with slots:
                return await self._recover_one(journal, entry)

        outcomes = await asyncio.gather(*(one(entry) for entry in await journal.pending()), return_exceptions=True)
        recovered = sum(1 for outcome in outcomes if outcome is True)
        if recovered:
            log.warning("recovered in-flight orders", extra={"broker": self.broker, "count": recovered})
            self._touch()
        failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
        if failure is not None:
            raise failure
        return recovered

    async def _recover_one(self, journal: Journal, entry: JournaledJob) -> bool:
        """One journal entry queued again (True), or skipped or dropped (False)."""
        signal = signal_from_pb(entry.signal)
        key = (signal.user_id, signal.signal_id)
        if key in self._jobs:
            return False
        if await self._routed_elsewhere(signal, sent=bool(entry.legs)):
            # Never sent, and the router has since moved the order on (it waits for an
            # admission only so long): taking it now would place it twice. Or it ended
            # already (a crash between the ledger's terminal update and the journal's done).
            log.warning("journaled order was routed elsewhere or ended meanwhile; dropped",
                        extra={"broker": self.broker, "signal_id": signal.signal_id})
            await journal.done(signal.user_id, signal.signal_id)
            return False
        if key in self._jobs:  # admitted again while the ledger was asked
            return False
        job = _Job(signal, entry.method, entry.priority)
        job.recovered = dict(entry.legs)
        job.from_journal = True
        job.status = Status.EXECUTING if entry.legs else Status.QUEUED
        self._jobs[key] = job
        if not entry.legs:
            # The crash may have come between the journal and the ledger's QUEUED.
            try:
                recorded = await self._emit_if_legal(job, Status.QUEUED, f"queued again on {self.broker} after a restart")
                moved = not recorded and await self._routed_elsewhere(signal)
            except BaseException:
                del self._jobs[key]  # not taken: the next recovery tries it again
                raise
            if moved:
                # Ended (or moved on) since the check above, never sent: the aggregator ends
                # orders nobody carried on. The ledger refused our QUEUED: nothing may be placed.
                log.warning("journaled order ended meanwhile; dropped",
                            extra={"broker": self.broker, "signal_id": signal.signal_id})
                del self._jobs[key]
                await journal.done(signal.user_id, signal.signal_id)
                return False
        self._queue.push_recovered(signal.user_id, job, entry.priority)
        self._work_ready.release()
        return True

    async def _routed_elsewhere(self, signal: Signal, sent: bool = False) -> bool:
        """Whether the ledger shows the order finished or (never `sent` here) routed to another broker."""
        get_order = getattr(self._ledger, "get_order", None)
        if get_order is None:
            return False
        try:
            order = await get_order(signal.user_id, signal.signal_id)
        except ServiceError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return STATUS_FROM_PB[order.status].terminal or (not sent and order.broker != self.broker)

    async def _emit_if_legal(self, job: _Job, status: Status, reason: str) -> bool:
        """Record `status` unless the ledger holds that it cannot follow the order's state (False)."""
        try:
            await self._emit(job, status, reason)
        except ServiceError as exc:
            if exc.reason != "ILLEGAL_TRANSITION":
                raise
            return False
        return True

    async def stop(self) -> None:
        tasks = [*self._workers, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers = []

    async def refresh_quotes(self) -> None:
        """Re-read the listed pairs' books (best prices, visible liquidity per side) as far as the
        exchange's public budget allows right now, oldest first; orders never wait behind this."""
        pairs = sorted(self._markets, key=self._refresh_urgency)
        if self.breaker.state is not BreakerState.CLOSED:
            # The exchange is left alone for the breaker's open period, then one read is its probe.
            pairs = pairs[:1] if self.breaker.allow() else []
        if self._limits is not None:
            # Paced by its own bucket so it never takes more than a share of the exchange's public
            # budget, and only booked when the exchange's budget has room right now.
            now = self._clock()
            allowed = []
            # Until every pair has been read once, only the exchange's own budget paces reads.
            paced = self.quotes_complete
            for pair in pairs:
                if paced and self._refresh_budget.earliest(now) > now:
                    break
                if not self._limits.try_reserve(now, EXECUTOR_ACCOUNT, "order_book"):
                    break
                if paced:
                    self._refresh_budget.record(now)
                allowed.append(pair)
            pairs = allowed
        await asyncio.gather(*(self._refresh_quote(pair) for pair in pairs))
        self._touch()

    def _refresh_urgency(self, pair: str) -> tuple[int, float]:
        """Oldest quote first; but a pair orders are trading, whose quote is half way to stale,
        goes ahead of all others: kept fresh by these reads, its orders never wait for a book
        read of their own (which can wait a second for the exchange's public budget)."""
        quote = self._quotes.get(pair)
        at = quote.at if quote is not None else -1.0
        now = self._clock()
        trading = now - self._ordered_at.get(pair, -math.inf) <= HOT_PAIR_S
        stale_soon = now - at >= self._config.quote_max_age_s / 2
        return (0 if trading and stale_soon else 1, at)

    # ---- change notification ------------------------------------------------------------------

    def _touch(self) -> None:
        """Something a router scores on changed (queue, outcomes, quotes, breaker)."""
        metrics.QUEUE_DEPTH.labels(self.broker).set(len(self._queue) + self._deferred)
        metrics.BREAKER_STATE.labels(self.broker).set(_BREAKER_VALUE[self.breaker.state])
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _record_transport(self, ok: bool) -> None:
        before = self.breaker.state
        if ok:
            self.breaker.record_success()
        else:
            self.breaker.record_failure()
        if self.breaker.state is not before:
            log.warning("breaker %s -> %s", before.value, self.breaker.state.value, extra={"broker": self.broker})
            self._touch()

    async def wait_changed(self, seen_version: int, timeout_s: float) -> None:
        """Return once the version moved past `seen_version`, or after `timeout_s`."""
        if self.version != seen_version:
            return
        await wait_set(self._changed, timeout_s)

    async def _refresh_quote(self, pair: str) -> None:
        try:
            book = await self._timed(
                "order_book", EXECUTOR_ACCOUNT, lambda: self._venue.fetch_order_book(pair), reserved=True
            )
        except VenueError as exc:
            # Any answer but a transport failure shows the exchange is there (a probe must end).
            self._record_transport(ok=not exc.transport)
            log.warning("order book unavailable", extra={"pair": pair, "error": repr(exc)})
            self._quotes.pop(pair, None)
            return
        self._record_transport(ok=True)
        self._store_quote(pair, book)

    def _store_quote(self, pair: str, book: OrderBook) -> None:
        """The pair's quote (best prices, liquidity near the mid) from a book just read."""
        if book.best_bid is None or book.best_ask is None:
            self._quotes.pop(pair, None)
            return
        mid = (book.best_bid + book.best_ask) / 2
        band = mid * self._config.liquidity_band_bps * BPS
        bids = tuple(lvl for lvl in book.bids if lvl.price >= mid - band)
        asks = tuple(lvl for lvl in book.asks if lvl.price <= mid + band)
        self._read_once.add(pair)
        self._quotes[pair] = PairQuote(
            best_bid=book.best_bid,
            best_ask=book.best_ask,
            bid_liquidity_usd=sum((lvl.price * lvl.quantity for lvl in bids), ZERO),
            ask_liquidity_usd=sum((lvl.price * lvl.quantity for lvl in asks), ZERO),
            bids=bids,
            asks=asks,
            at=self._clock(),
        )

    def snapshot(self) -> ExecutorSnapshot:
        return ExecutorSnapshot(
            broker=self.broker,
            fees=self._fees,
            # Every listed pair; one without a current book shows no liquidity.
            pairs={pair: self._quotes.get(pair, _NO_QUOTE) for pair in self._markets},
            queue_depth=len(self._queue) + self._deferred,
            max_queue_size=self._queue.max_size,
            active_executions=self._active,
            total_executions=self._total,
            successful_executions=self._successful,
            avg_latency_ms=self._latency.value_ms,
            breaker_state=self.breaker.state,
            withdrawal_fees={pair: m.withdrawal_fee for pair, m in self._markets.items()},
            version=self.version,
            requires_api_keys=getattr(self._venue, "requires_api_keys", False),
        )

    # ---- admission ---------------------------------------------------------------------------

    async def execute(
        self, signal: Signal, method: ExecutionMethod, priority: int
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        key = (signal.user_id, signal.signal_id)
        job = self._jobs.get(key)
        if job is None:
            # Admitted whatever the caller does meanwhile. A router killed while the journal and
            # the ledger's QUEUED were written cancelled the admission between the two, and left
            # the order QUEUED with no worker ever to take it (5 orders of a 10-minute chaos run).
            admission = asyncio.ensure_future(self._admit(signal, method, priority))
            self._background.add(admission)
            admission.add_done_callback(self._admitted)
            job = await asyncio.shield(admission)
        async for update in job.follow():
            yield update

    def _admitted(self, admission: asyncio.Future[_Job]) -> None:
        self._background.discard(admission)
        if not admission.cancelled():
            admission.exception()  # a refusal nobody awaited any more is not an unretrieved error

    async def _admit(self, signal: Signal, method: ExecutionMethod, priority: int) -> _Job:
        if not self.ready:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "NOT_READY", f"{self.broker} markets not loaded yet")
        if self._draining:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "DRAINING", f"{self.broker} executor is shutting down")
        if self.breaker.state is BreakerState.OPEN:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, "BREAKER_OPEN", f"{self.broker} circuit breaker is OPEN"
            )
        if signal.pair not in self._markets:
            raise precondition("PAIR_NOT_LISTED", f"{signal.pair} is not listed on {self.broker}")
        killed = self.kill_reason(signal.user_id)
        if killed:
            raise precondition("KILL_SWITCH", killed, user_id=signal.user_id)
        try:
            self._queue.check_room(signal.user_id)  # refuse before anything is recorded
        except QueueFull as exc:
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.reason, f"{self.broker}: {exc}") from None
        key = (signal.user_id, signal.signal_id)
        job = _Job(signal, method, priority)
        self._jobs[key] = job
        try:
            if self._journal is not None:
                await self._journal.admit(signal_to_pb(signal), method, priority)
            await self._emit(job, Status.QUEUED, reason=f"queued on {self.broker} (priority {priority})")
            self._queue.push(signal.user_id, job, priority)
            self._touch()
        except (ServiceError, QueueFull) as exc:
            self._jobs.pop(key, None)
            await self._forget(job)
            if isinstance(exc, QueueFull):
                raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.reason, f"{self.broker}: {exc}") from None
            raise
        self._work_ready.release()
        return job

    async def _worker(self) -> None:
        while True:
            await self._work_ready.acquire()
            job = self._queue.pop()
            if job is None or self._must_wait_for_budget(job) or self._must_wait_for_breaker(job):
                continue
            self._active += 1
            self._touch()
            try:
                if job.done:  # cancelled while it waited
                    continue
                job.started = True
                tracing.record_span("executor.queue_wait", job.waiting_since_ns, job.trace,
                                    broker=self.broker, **job.trace_attributes())
                # A recovered order with legs sent goes on: they must be looked up, never handed back.
                if not job.recovered and not self.breaker.allow():
                    await self._hand_back(job, f"{self.broker} circuit breaker is {self.breaker.state.value}")
                    continue
                with tracing.span("executor.order", job.trace, broker=self.broker, **job.trace_attributes()):
                    await self._run(job)
                    tracing.annotate(status="not_sent" if job.released else job.status.value)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("execution crashed", extra={"signal_id": job.signal.signal_id})
                await self._abandon(job)
            finally:
                self._active -= 1
                self._touch()
                self._jobs.pop((job.signal.user_id, job.signal.signal_id), None)

    def _must_wait_for_budget(self, job: _Job) -> bool:
        """A job whose account has no order budget left waits outside the queue, not in a
        worker: one user's exhausted budget never holds a worker another user's order needs."""
        if self._limits is None or job.started or job.recovered or job.done:
            return False
        wait = self._limits.wait_for(self._clock(), job.signal.user_id, "place_order")
        if wait <= 0:
            return False
        metrics.RATE_LIMIT_WAITS.labels(self.broker).inc()
        self._defer(job, wait, "executor.rate_limit_wait")
        return True

    def _must_wait_for_breaker(self, job: _Job) -> bool:
        """A recovered order whose legs were sent before the restart is never handed back (it
        may have traded): while the breaker is open it waits outside the queue, then is looked up."""
        if not job.recovered or job.done or self.breaker.state is not BreakerState.OPEN:
            return False
        self._defer(job, 1.0, "executor.breaker_wait")
        return True

    def _defer(self, job: _Job, wait: float, span: str) -> None:
        self._deferred += 1
        task = asyncio.create_task(self._requeue_after(job, wait, span))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _requeue_after(self, job: _Job, wait: float, span: str) -> None:
        deferred_ns = tracing.now_ns()
        try:
            await self._sleep(wait)
        finally:
            self._deferred -= 1
            tracing.record_span(span, deferred_ns, job.trace, broker=self.broker, **job.trace_attributes())
            job.waiting_since_ns = tracing.now_ns()
        if not job.done:
            self._queue.push_recovered(job.signal.user_id, job, job.priority)
            self._work_ready.release()

    async def _abandon(self, job: _Job) -> None:
        """After a bug or a ledger outage: record FAILED if possible; release the followers anyway."""
        if job.done:
            return
        try:
            await self._finish(job, Status.FAILED, "internal error in executor")
        except Exception:
            log.exception("could not record FAILED", extra={"signal_id": job.signal.signal_id})
            job.done = True
            job.publish_nothing()

    # ---- execution ---------------------------------------------------------------------------

    async def _run(self, job: _Job) -> None:
        market = self._markets[job.signal.pair]
        legs = self._plan_legs(job)
        try:
            job.account = await self._accounts(job.signal.user_id)
        except ServiceError as exc:
            if job.status is Status.QUEUED:
                await self._hand_back(job, f"{self.broker}: the user's API keys could not be read: {exc.message}")
            else:
                await self._finish(job, Status.FAILED, f"{self.broker}: the user's API keys could not be read")
            return
        try:
            for index, leg_usd in enumerate(legs):
                if index:
                    await self._between_slices(job)
                if job.cancel_reason:
                    raise _LegOutcome(
                        Status.CANCELLED,
                        f"{job.cancel_reason}; {index} of {len(legs)} slices sent, filled "
                        f"{fmt(job.filled_quantity)} {market.base}",
                    )
                await self._run_leg(job, market, index, leg_usd, last=index == len(legs) - 1)
            if not job.done:
                reason = (
                    f"filled {fmt(job.filled_quantity)} of {fmt(job.order_quantity)} {market.base}"
                )
                await self._finish(job, Status.CANCELLED, reason)
        except _LegOutcome as outcome:
            status = outcome.status
            if status is Status.REJECTED and job.filled_quantity > 0:
                # Part of the order already traded: it can no longer be rejected as a whole.
                status = Status.CANCELLED
            await self._finish(job, status, outcome.reason)
        except _Ambiguous as exc:
            if job.status is Status.QUEUED:
                # Nothing has been sent for this order yet: another broker can take it.
                await self._hand_back(job, f"{self.broker} unavailable before the order was sent: {exc}")
                return
            await self._finish(job, Status.FAILED, f"{self.broker} unavailable: {exc}")

    async def _between_slices(self, job: _Job) -> None:
        """The TWAP interval, cut short when the order is cancelled meanwhile."""
        waits = [asyncio.ensure_future(self._sleep(self._config.twap_interval_s)), asyncio.ensure_future(job.cancelled.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _plan_legs(self, job: _Job) -> list[Decimal]:
        size = job.signal.size_usd
        if job.method is not ExecutionMethod.TWAP:
            return [size]
        slices = min(self._config.twap_max_slices, max(1, math.ceil(size / self._config.twap_slice_usd)))
        base = (size / slices).quantize(Decimal("0.01"))
        return [base] * (slices - 1) + [size - base * (slices - 1)]

    async def _run_leg(self, job: _Job, market: Market, leg: int, leg_usd: Decimal, last: bool) -> None:
        name = "executor.twap_slice" if job.method is ExecutionMethod.TWAP else "executor.leg"
        with tracing.span(name, leg=leg, broker=self.broker, signal_id=job.signal.signal_id):
            await self._send_leg(job, market, leg, leg_usd, last)

    async def _send_leg(self, job: _Job, market: Market, leg: int, leg_usd: Decimal, last: bool) -> None:
        recovered = job.recovered.get(leg)
        request = recovered or await self._new_request(job, market, leg, leg_usd)
        if job.cancel_reason and recovered is None:
            raise _LegOutcome(Status.CANCELLED, f"{job.cancel_reason} before leg {leg} was sent")
        job.order_quantity += request.quantity
        job.client_order_id = request.client_order_id
        # Journaled and in the ledger before it is sent: after a crash it is found by its id.
        if self._journal is not None:
            await self._journal.leg(job.signal.user_id, job.signal.signal_id, leg, request)
        await self._emit(job, Status.EXECUTING, reason=self._describe(request, leg))
        report = await self._place(job, request, look_up_first=recovered is not None)
        await self._follow(job, report, last_leg=last, leg=leg)

    async def _read_book(self, pair: str) -> OrderBook:
        """One book read per pair however many orders wait for it (an exchange's public budget
        can be one request a second), kept as the pair's quote for the orders that follow."""
        pending = self._book_reads.get(pair)
        if pending is None:

            async def read() -> OrderBook:
                book = await self._venue_call(
                    "order_book", EXECUTOR_ACCOUNT, lambda: self._venue.fetch_order_book(pair), "order book"
                )
                self._store_quote(pair, book)
                return book

            pending = self._book_reads[pair] = asyncio.ensure_future(read())
            pending.add_done_callback(lambda _: self._book_reads.pop(pair, None))
        # Shielded: a waiter that is cancelled (its order cancelled) does not cancel the others' read.
        return await asyncio.shield(pending)

    async def _new_request(self, job: _Job, market: Market, leg: int, leg_usd: Decimal) -> OrderRequest:
        signal = job.signal
        self._ordered_at[signal.pair] = self._clock()
        quote = self._quotes.get(signal.pair)
        if quote is not None and self._clock() - quote.at <= self._config.quote_max_age_s:
            touch: Decimal | None = quote.best_ask if signal.side is Side.BUY else quote.best_bid
        else:
            book = await self._read_book(signal.pair)
            touch = book.best_ask if signal.side is Side.BUY else book.best_bid
        if touch is None:
            raise _LegOutcome(Status.FAILED, f"no liquidity on {self.broker} for {signal.pair}")
        quantity = floor_to_step(leg_usd / touch, market.lot_size)
        if quantity < market.min_quantity or quantity * touch < market.min_notional:
            raise _LegOutcome(
                Status.REJECTED,
                f"${fmt(leg_usd)} is below {self.broker}'s minimum for {signal.pair} "
                f"({fmt(market.min_quantity)} {market.base}, ${fmt(market.min_notional)})",
            )
        limit_price = None
        if signal.limit_price is not None:
            # The strategy's price, on the tick: never paying more (buy) or taking less (sell).
            limit_price = (floor_to_step if signal.side is Side.BUY else ceil_to_step)(signal.limit_price, market.tick_size)
        elif job.method is ExecutionMethod.LIMIT:
            cross = self._config.limit_offset_bps * BPS
            limit_price = floor_to_step(
                touch * (1 + cross if signal.side is Side.BUY else 1 - cross), market.tick_size
            )
        return OrderRequest(
            client_order_id=client_order_id(signal.user_id, signal.signal_id, self.broker, leg),
            pair=signal.pair,
            side=signal.side,
            order_type=OrderType.LIMIT if limit_price is not None else OrderType.MARKET,
            quantity=quantity,
            limit_price=limit_price,
        )

    def _describe(self, request: OrderRequest, leg: int) -> str:
        what = f"{request.order_type.value} {request.side.value} {fmt(request.quantity)} {request.pair}"
        if request.limit_price is not None:
            what += f" @ {fmt(request.limit_price)}"
        return f"{what} on {self.broker} (leg {leg})"

    async def _place(self, job: _Job, request: OrderRequest, look_up_first: bool = False) -> OrderReport:
        """Place the order exactly once, whatever the exchange does.

        When a send's outcome is unknown (timeout, 5xx, connection lost) the order is looked up by
        its client order id: found, it is followed; not found, it was never placed and is sent
        again under the same id (the exchange refuses a second order with that id); no answer,
        the look-up is repeated with backoff, up to `unknown_outcome_s`.
        """
        account = self._account(job)
        cid = request.client_order_id
        give_up_at = self._clock() + self._config.unknown_outcome_s
        delays = backoff(self._config.lookup_backoff_s, self._config.lookup_backoff_max_s, self._rng)
        send, never_placed = not look_up_first, False
        while True:
            if send:
                try:
                    return await self._venue_call(
                        "place_order", account.account_id, lambda: self._venue.create_order(account, request), "place order"
                    )
                except (DuplicateClientOrderId, _Ambiguous):
                    pass
            try:
                report = await self._timed(
                    "fetch_order", account.account_id, lambda: self._venue.fetch_order(account, job.signal.pair, cid)
                )
            except OrderNotFound:
                self._record_transport(ok=True)
                send, never_placed = True, True
            except ExchangeUnavailable:
                self._record_transport(ok=False)
                send = False
            else:
                self._record_transport(ok=True)
                return report
            delay = next(delays)
            if self._clock() + delay > give_up_at:
                what = "was not placed" if never_placed and send else "has an unknown outcome"
                raise _LegOutcome(
                    Status.FAILED,
                    f"{self.broker} unavailable for {self._config.unknown_outcome_s:g}s; order {cid} {what}",
                )
            await self._sleep(delay)

    async def _follow(self, job: _Job, report: OrderReport, last_leg: bool, leg: int) -> None:
        """Record fills as they come until the venue order is done, or the limit expires (then
        the rest is cancelled, or sent as a market order when the signal asks for that)."""
        account = self._account(job)
        job.venue_order_id = report.venue_order_id
        expiry_s = job.signal.limit_expiry_s or self._config.limit_timeout_s
        give_up_at = self._clock() + expiry_s
        while True:
            await self._absorb(job, report, last_leg)
            if report.state.done or job.done:
                return
            if self._clock() >= give_up_at or job.wind_down or job.cancel_reason:
                cid = report.client_order_id
                report = await self._venue_call(
                    "cancel_order", account.account_id,
                    lambda: self._venue.cancel_order(account, job.signal.pair, cid), "cancel order",
                )
                await self._absorb(job, report, last_leg)
                rest = report.quantity - report.filled_quantity
                expired = not (job.cancel_reason or job.wind_down)
                if expired and job.signal.convert_on_expiry and rest > 0 and not job.done:
                    await self._convert_rest(job, report, rest, last_leg, leg)
                    return
                if not job.done:
                    if job.cancel_reason:
                        why = job.cancel_reason
                    elif job.wind_down:
                        why = f"{self.broker} executor shutting down"
                    else:
                        why = f"limit order not filled within {expiry_s:g}s"
                    raise _LegOutcome(
                        Status.CANCELLED,
                        f"{why}; filled {fmt(job.filled_quantity)} of {fmt(job.order_quantity)}",
                    )
                return
            await self._sleep(self._config.order_poll_s)
            cid = report.client_order_id
            report = await self._venue_call(
                "fetch_order", account.account_id,
                lambda: self._venue.fetch_order(account, job.signal.pair, cid), "poll order",
            )

    async def _convert_rest(self, job: _Job, expired: OrderReport, rest: Decimal, last_leg: bool, leg: int) -> None:
        """The expired limit's rest, as a market order with its own client order id."""
        signal = job.signal
        request = OrderRequest(
            client_order_id=client_order_id(signal.user_id, signal.signal_id, self.broker, CONVERTED_LEG + leg),
            pair=signal.pair,
            side=signal.side,
            order_type=OrderType.MARKET,
            quantity=rest,
        )
        job.client_order_id = request.client_order_id
        if self._journal is not None:
            await self._journal.leg(signal.user_id, signal.signal_id, CONVERTED_LEG + leg, request)
        await self._emit(
            job, Status.EXECUTING,
            reason=f"limit {fmt(expired.limit_price or Decimal(0))} expired; the rest ({fmt(rest)}) goes at market",
        )
        report = await self._place(job, request)
        await self._follow(job, report, last_leg, CONVERTED_LEG + leg)

    async def _absorb(self, job: _Job, report: OrderReport, last_leg: bool) -> None:
        new = [f for f in report.fills if f.trade_id not in job.seen_trades]
        if not new:
            return
        for fill in new:
            job.seen_trades.add(fill.trade_id)
            job.filled_quantity += fill.quantity
            job.filled_notional += fill.price * fill.quantity
            job.fees_total += fill.fee
        # FILLED only when the last leg completes everything ordered; a TWAP with a short slice
        # ends CANCELLED with what it got.
        if last_leg and job.filled_quantity >= job.order_quantity:
            await self._finish(job, Status.FILLED, "", fills=new)
        else:
            await self._emit(job, Status.PARTIAL_FILL, fills=new)

    # ---- plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _account(job: _Job) -> Account:
        assert job.account is not None, "resolved when the job starts running"
        return job.account

    async def _timed(
        self, operation: str, account: str, make_call: Callable[[], Awaitable[R]], reserved: bool = False
    ) -> R:
        """One venue request: within the exchange's rate limits (waiting for budget, backing off
        on a 429, which means the request was not acted on, so repeating it is safe), timed.
        `reserved`: the caller already booked the first attempt's budget."""
        for attempt in range(self._config.rate_limited_retries + 1):
            if self._limits is not None and not (reserved and attempt == 0):
                wait = self._limits.reserve(self._clock(), account, operation)
                if wait > 0:
                    metrics.RATE_LIMIT_WAITS.labels(self.broker).inc()
                    with tracing.span("executor.rate_limit_wait", broker=self.broker, operation=operation):
                        await self._sleep(wait)
            started = self._clock()
            try:
                with tracing.span(f"venue.{operation}", broker=self.broker, operation=operation, attempt=attempt + 1):
                    result = await make_call()
            except RateLimited as exc:
                if self._limits is None or attempt == self._config.rate_limited_retries:
                    raise
                self._limits.penalize(self._clock(), account, exc.retry_after_s)
                continue
            self._latency.observe((self._clock() - started) * 1000.0)
            if self._limits is not None:
                self._limits.succeeded(self._clock(), account)
            return result
        raise AssertionError("unreachable")

    async def _venue_call(self, operation: str, account: str, make_call: Callable[[], Awaitable[R]], what: str) -> R:
        """One venue call: rate-limited, timed, breaker fed, venue errors turned into order outcomes."""
        try:
            result = await self._timed(operation, account, make_call)
        except ExchangeUnavailable as exc:
            self._record_transport(ok=False)
            raise _Ambiguous(f"{what}: {exc}") from exc
        except OrderNotFound as exc:
            raise _LegOutcome(Status.FAILED, f"{what}: order not found on {self.broker}") from exc
        except (InsufficientFunds, InvalidOrder, AuthenticationFailed, ExchangeRejected) as exc:
            raise _LegOutcome(Status.REJECTED, f"{self.broker} rejected the order: {exc}") from exc
        except DuplicateClientOrderId:
            raise
        except RateLimited as exc:
            raise _LegOutcome(Status.FAILED, f"{self.broker} kept rate limiting: {exc}") from exc
        self._record_transport(ok=True)
        return result

    async def _emit(
        self, job: _Job, status: Status, reason: str = "", fills: list[FillReport] | None = None
    ) -> common_pb2.ExecutionUpdate:
        signal = job.signal
        job.events += 1
        update = common_pb2.ExecutionUpdate(
            signal_id=signal.signal_id,
            user_id=signal.user_id,
            status=STATUS_TO_PB[status],
            broker=self.broker,
            pair=signal.pair,
            side=SIDE_TO_PB[signal.side],
            reason=reason,
            filled_quantity=fmt(job.filled_quantity),
            filled_notional=fmt(job.filled_notional),
            fees_total=fmt(job.fees_total),
            average_price=fmt(quantize_derived(job.filled_notional / job.filled_quantity)) if job.filled_quantity else "0",
            order_quantity=fmt(job.order_quantity),
            client_order_id=job.client_order_id,
            venue_order_id=job.venue_order_id,
            time=now_pb(),
            update_id=f"{signal.signal_id}:{self.broker}:{self._run_id}:{job.events}:{status.value}",
            parent_signal_id=signal.metadata.get(PARENT_KEY, ""),
            fills=[_fill_pb(f) for f in fills or ()],
        )
        stored = await self._ledger.record(update)
        job.status = status
        job.publish(stored, terminal=status.terminal)
        return stored

    async def _finish(
        self, job: _Job, status: Status, reason: str, fills: list[FillReport] | None = None
    ) -> None:
        self._total += 1
        metrics.EXECUTIONS.labels(self.broker, job.signal.pair, status.value).inc()
        if status is Status.FILLED:
            self._successful += 1
            metrics.EXECUTIONS_SUCCESS.labels(self.broker, job.signal.pair).inc()
        await self._emit(job, status, reason, fills)
        await self._forget(job)

    async def _hand_back(self, job: _Job, reason: str) -> None:
        """Nothing was sent for the job: the router following its Execute call routes it
        elsewhere. A job recovered from the journal has no such router (it follows the ledger,
        or is gone), so it ends FAILED in the ledger, saying nothing was sent; handed back to
        nobody it would stay QUEUED for good. If that cannot be recorded, it stays in the journal
        for the next start."""
        if not job.from_journal:
            job.release(reason)
            await self._forget(job)
            return
        try:
            await self._finish(job, Status.FAILED, f"{reason}; nothing was sent")
        except Exception:
            log.exception("could not end a recovered order", extra={"signal_id": job.signal.signal_id})
            job.done = True
            job.publish_nothing()

    async def _forget(self, job: _Job) -> None:
        """The job is over for this executor (terminal in the ledger, or handed back)."""
        if self._journal is not None:
            await self._journal.done(job.signal.user_id, job.signal.signal_id)


async def _keyless_account(user_id: str) -> Account:
    return Account(user_id=user_id, account_id=user_id)


class _Ambiguous(Exception):
    """The exchange did not answer: the call's outcome is unknown."""


def _fill_pb(fill: FillReport) -> common_pb2.Fill:
    pb = common_pb2.Fill(
        venue_trade_id=fill.trade_id,
        price=fmt(fill.price),
        quantity=fmt(fill.quantity),
        fee=fmt(fill.fee),
        fee_currency=fill.fee_currency,
        liquidity=common_pb2.LIQUIDITY_MAKER if fill.liquidity.value == "maker" else common_pb2.LIQUIDITY_TAKER,
    )
    if fill.time is not None:
        pb.time.FromDatetime(fill.time)
    return pb
