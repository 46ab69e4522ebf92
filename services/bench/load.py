"""The load generators: users, and signals sent the ways strategy clients send them.

Every generator runs in the `nija bench` process on one event loop and records, per signal, the
time from its submission to its first update and to its terminal update (perf_counter_ns), what it
ended as, and when (seconds since the phase started, for throughput over time). A refusal by
status code (the per-user rate limit, a risk limit) is an outcome too, "refused:<ErrorInfo reason>",
but no terminal latency: nothing was executed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import multiprocessing
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import grpc
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.bench import echo
from services.domain.states import Status
from services.runtime.channels import open_channel
from services.runtime.errors import reason_of
from services.runtime.security import Security
from services.runtime.wire import STATUS_TO_PB, status_name

TERMINAL_PB = frozenset(STATUS_TO_PB[s] for s in Status if s.terminal)
BROKERS = ("binance", "coinbase", "kraken", "alpaca")
#: A generous deadline per signal: a benchmark records a slow signal, it does not abandon it.
SIGNAL_TIMEOUT_S = 120.0


class NotAvailable(Exception):
    """The mesh does not serve this API (UNIMPLEMENTED): its figure is reported as not available."""


# ---- users -------------------------------------------------------------------------------------


def limits(trades_per_second: str = "20", trade_burst: int = 40) -> permission_pb2.RiskLimits:
    """A bench user's limits: what a desk would give an active strategy account (every limit set),
    high enough that a run never reaches them; only the per-user rate limit is left to bind, and
    only for the noisy neighbour's flooding user."""
    return permission_pb2.RiskLimits(
        max_position_usd="250000", max_open_positions=20, max_daily_notional_usd="5000000",
        max_daily_loss_usd="100000", trades_per_second=trades_per_second, trade_burst=trade_burst,
    )


async def make_users(
    permission: str, admin: Security, names: Sequence[str], risk: permission_pb2.RiskLimits, concurrency: int = 100
) -> None:
    """Create (or reset) `names` through AdminService/PutUser. They need no API keys: the simulated
    venues trade for any account."""
    async with open_channel(permission, admin) as channel:
        stub = permission_pb2_grpc.AdminServiceStub(channel)
        names_left = iter(names)

        async def worker() -> None:
            for user in names_left:
                await stub.PutUser(permission_pb2.PutUserRequest(user=permission_pb2.UserPermissions(
                    user_id=user, enabled=True, allowed_brokers=list(BROKERS), max_order_size_usd="10000",
                    limits=risk)), timeout=30)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(names)))))


# ---- signals -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Signals:
    """Unique signal ids for a run: `<run>-<phase>-<n>`; a re-run never re-attaches to an old one."""

    run_id: str
    pair: str = "BTC-USD"
    size_usd: str = "100"
    _counter: itertools.count = dataclasses.field(default_factory=itertools.count)

    def make(self, phase: str, user: str, signal_type: int = common_pb2.SIGNAL_TYPE_EXIT) -> common_pb2.TradeSignal:
        """A $100 buy. EXIT is routed as a market order; ENTRY as a marketable limit (the seed's burst)."""
        pb = common_pb2.TradeSignal(
            signal_id=f"{self.run_id}-{phase}-{next(self._counter)}", user_id=user, pair=self.pair,
            side=common_pb2.SIDE_BUY, size_usd=self.size_usd, signal_type=signal_type, strategy="bench",
        )
        pb.timestamp.GetCurrentTime()
        return pb

    def batch(self, phase: str, users: Sequence[str], count: int, signal_type: int = common_pb2.SIGNAL_TYPE_EXIT
              ) -> list[common_pb2.TradeSignal]:
        """`count` signals spread round-robin over `users`."""
        return [self.make(phase, users[i % len(users)], signal_type) for i in range(count)]


# ---- recording ---------------------------------------------------------------------------------


@dataclasses.dataclass
class LoadResult:
    sent: int = 0
    elapsed_s: float = 0.0
    first_ns: list[int] = dataclasses.field(default_factory=list)
    terminal_ns: list[int] = dataclasses.field(default_factory=list)
    #: Seconds since the phase started at which each signal ended (terminal or refused).
    completions_s: list[float] = dataclasses.field(default_factory=list)
    outcomes: Counter[str] = dataclasses.field(default_factory=Counter)
    updates: int = 0
    #: CPU seconds of the load generator's own process over the phase (all its threads).
    client_cpu_s: float = 0.0

    def absorb(self, other: LoadResult) -> None:
        """Add another phase's figures to these (the noisy mode's interleaved windows)."""
        self.sent += other.sent
        self.elapsed_s += other.elapsed_s
        self.first_ns += other.first_ns
        self.terminal_ns += other.terminal_ns
        self.outcomes += other.outcomes
        self.updates += other.updates
        self.client_cpu_s += other.client_cpu_s

    @property
    def ended(self) -> int:
        """Signals that reached a terminal state (any)."""
        return len(self.terminal_ns)


class Recorder:
    def __init__(self, on_done: Callable[[], None] | None = None) -> None:
        self.result = LoadResult()
        self._on_done = on_done or (lambda: None)
        self._t0 = time.perf_counter_ns()
        self._cpu0 = time.process_time()

    def first(self, started_ns: int) -> None:
        self.result.first_ns.append(time.perf_counter_ns() - started_ns)

    def done(self, started_ns: int, outcome: str, terminal: bool) -> None:
        now = time.perf_counter_ns()
        if terminal:
            self.result.terminal_ns.append(now - started_ns)
        self.result.completions_s.append((now - self._t0) / 1e9)
        self.result.outcomes[outcome] += 1
        self._on_done()

    def finish(self) -> LoadResult:
        self.result.elapsed_s = (time.perf_counter_ns() - self._t0) / 1e9
        self.result.client_cpu_s = round(time.process_time() - self._cpu0, 3)
        return self.result


def refused(code: grpc.StatusCode | str, reason: str) -> str:
    name = code if isinstance(code, str) else code.name
    return f"refused:{reason or name}"


# ---- unary: RouterService/SubmitSignal ----------------------------------------------------------


async def submit_one(stub: router_pb2_grpc.RouterServiceStub, pb: common_pb2.TradeSignal, rec: Recorder) -> None:
    """One signal through SubmitSignal, read to its terminal update."""
    started = time.perf_counter_ns()
    rec.result.sent += 1
    last = None
    try:
        async for response in stub.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=SIGNAL_TIMEOUT_S):
            if last is None:
                rec.first(started)
            rec.result.updates += 1
            last = response.update
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED,
                          grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
            rec.done(started, refused(exc.code(), reason_of(exc)), terminal=False)
        else:
            rec.done(started, f"error:{exc.code().name}", terminal=False)
        return
    if last is not None and last.status in TERMINAL_PB:
        rec.done(started, status_name(last.status), terminal=True)
    else:
        rec.done(started, "ended-early", terminal=False)


async def run_unary(
    router: str, security: Security, signals: Iterable[common_pb2.TradeSignal], concurrency: int,
    on_done: Callable[[], None] | None = None,
) -> LoadResult:
    """`concurrency` callers, each sending its next signal as soon as its last one ended."""
    rec = Recorder(on_done)
    async with open_channel(router, security) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        left = iter(signals)

        async def worker() -> None:
            for pb in left:
                await submit_one(stub, pb, rec)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rec.finish()


async def run_burst(
    router: str, security: Security, signals: Sequence[common_pb2.TradeSignal],
    on_done: Callable[[], None] | None = None,
) -> LoadResult:
    """Every signal at once, on a channel connected before the clock starts."""
    async with open_channel(router, security) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = router_pb2_grpc.RouterServiceStub(channel)
        rec = Recorder(on_done)
        await asyncio.gather(*(submit_one(stub, pb, rec) for pb in signals))
        return rec.finish()


# ---- streaming: RouterService/SubmitSignals ------------------------------------------------------


def split_window(window: int, streams: int) -> list[int]:
    """`window` signals in flight over `streams` streams, as evenly as it divides (each >= 1)."""
    streams = max(1, min(streams, window))
    return [window // streams + (1 if i < window % streams else 0) for i in range(streams)]


async def _one_stream(
    stub: router_pb2_grpc.RouterServiceStub, signals: Sequence[common_pb2.TradeSignal], window: int, rec: Recorder
) -> None:
    """One SubmitSignals stream with at most `window` signals in flight: a signal is sent as soon as
    an earlier one ended. Half-closed after the last is sent; the server ends the stream once
    every signal sent is terminal."""
    slots = asyncio.Semaphore(window)
    in_flight: dict[str, int] = {}  # signal_id -> submitted at (ns)
    answered: set[str] = set()

    async def requests() -> AsyncIterator[router_pb2.SubmitSignalsRequest]:
        for pb in signals:
            await slots.acquire()
            in_flight[pb.signal_id] = time.perf_counter_ns()
            rec.result.sent += 1
            yield router_pb2.SubmitSignalsRequest(signal=pb)

    def end(signal_id: str, outcome: str, terminal: bool) -> None:
        started = in_flight.pop(signal_id)
        answered.discard(signal_id)
        rec.done(started, outcome, terminal)
        slots.release()

    call = stub.SubmitSignals(requests(), timeout=SIGNAL_TIMEOUT_S + len(signals) / 10)
    try:
        async for response in call:
            if response.WhichOneof("event") == "refusal":
                r = response.refusal
                if r.signal_id in in_flight:
                    end(r.signal_id, refused(_code_name(r.refusal.code), r.refusal.reason), False)
                continue
            update = response.update
            started = in_flight.get(update.signal_id)
            if started is None:  # a split order's child: its parent's updates are what we time
                continue
            rec.result.updates += 1
            if update.signal_id not in answered:
                answered.add(update.signal_id)
                rec.first(started)
            if update.status in TERMINAL_PB:
                end(update.signal_id, status_name(update.status), True)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            raise NotAvailable(f"RouterService/SubmitSignals: {exc.details()}") from None
        for signal_id in list(in_flight):
            end(signal_id, f"error:{exc.code().name}", False)


def _code_name(number: int) -> str:
    """RESOURCE_EXHAUSTED for 8, ...: a Refusal carries the status code as its number."""
    return next((c.name for c in grpc.StatusCode if c.value[0] == number), "UNKNOWN")


async def run_stream(
    router: str, security: Security, signals: Sequence[common_pb2.TradeSignal], window: int, streams: int = 4,
    on_done: Callable[[], None] | None = None,
) -> LoadResult:
    """`window` signals in flight over `streams` SubmitSignals streams. NotAvailable when the
    router does not serve SubmitSignals."""
    rec = Recorder(on_done)
    windows = split_window(window, streams)
    async with open_channel(router, security) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        await asyncio.gather(*(
            _one_stream(stub, signals[i::len(windows)], w, rec) for i, w in enumerate(windows)
        ))
    return rec.finish()


# ---- routing decision: RouterService/QuoteRoute ------------------------------------------------


async def run_quotes(
    router: str, security: Security, signals: Iterable[common_pb2.TradeSignal], concurrency: int,
    on_done: Callable[[], None] | None = None,
) -> list[int]:
    """QuoteRoute latencies (ns): the routing decision through the router process, permission
    check included, nothing placed."""
    samples: list[int] = []
    done = on_done or (lambda: None)
    async with open_channel(router, security) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        left = iter(signals)

        async def worker() -> None:
            for pb in left:
                started = time.perf_counter_ns()
                await stub.QuoteRoute(router_pb2.QuoteRouteRequest(signal=pb), timeout=30)
                samples.append(time.perf_counter_ns() - started)
                done()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


# ---- the noisy neighbour ------------------------------------------------------------------------


async def run_paced(
    router: str, security: Security, users: Sequence[str], make: Callable[[str], common_pb2.TradeSignal],
    per_user_per_s: float, duration_s: float, on_done: Callable[[], None] | None = None,
) -> LoadResult:
    """Each of `users` sends a signal every 1/per_user_per_s seconds for `duration_s`, on a fixed
    schedule (a slow answer does not delay the next signal), the users' phases spread evenly."""
    rec = Recorder(on_done)
    loop = asyncio.get_running_loop()
    async with open_channel(router, security) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        start = loop.time()
        interval = 1.0 / per_user_per_s

        async def user_loop(k: int, user: str) -> None:
            sent = []
            for n in itertools.count():
                at = start + interval * (k / len(users) + n)
                if at >= start + duration_s:
                    break
                await asyncio.sleep(max(0.0, at - loop.time()))
                sent.append(asyncio.create_task(submit_one(stub, make(user), rec)))
            await asyncio.gather(*sent)

        await asyncio.gather(*(user_loop(k, u) for k, u in enumerate(users)))
    return rec.finish()


async def run_flood(
    router: str, security: Security, user: str, make: Callable[[str], common_pb2.TradeSignal],
    concurrency: int, flooding: Callable[[], bool], stop: Callable[[], bool], ready: Callable[[], None],
) -> LoadResult:
    """One user sending at full speed (`concurrency` callers) while `flooding()`, until `stop()`.
    Paused, it cancels its calls in flight, as a client that goes quiet would; the orders the
    mesh already accepted for them go on (a flood's accepted orders can wait a long while for the
    exchange's per-account budget)."""
    rec = Recorder()
    async with open_channel(router, security) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        stub = router_pb2_grpc.RouterServiceStub(channel)
        ready()

        async def worker() -> None:
            while True:
                await submit_one(stub, make(user), rec)

        while not stop():
            if not flooding():
                await asyncio.sleep(0.02)
                continue
            workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
            while flooding() and not stop():
                await asyncio.sleep(0.02)
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    return rec.finish()


def _flood_in_process(router: str, security: Security, user: str, run_id: str, concurrency: int,
                      flooding: Any, stop: Any, ready: Any, results: Any) -> None:
    """A child process's body: flood while `flooding` is set, until `stop` is (multiprocessing
    Events); `ready` is set once its channel is up."""
    signals = Signals(run_id=f"{run_id}-flood")
    result = asyncio.run(run_flood(router, security, user, lambda u: signals.make("flood", u), concurrency,
                                   flooding.is_set, stop.is_set, ready.set))
    results.put({"sent": result.sent, "elapsed_s": result.elapsed_s, "outcomes": dict(result.outcomes),
                 "client_cpu_s": result.client_cpu_s})


class FloodProcess:
    """One user flooding from a process of its own, as a real neighbour is another client: the
    flood then competes with the quiet users for the mesh, not for the load generator's loop. It
    starts paused; `flood(True)` and `flood(False)` turn it on and off."""

    def __init__(self, router: str, security: Security, user: str, run_id: str, concurrency: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._flooding, self._stop, self._ready = context.Event(), context.Event(), context.Event()
        self._results = context.Queue()
        self._process = context.Process(
            target=_flood_in_process,
            args=(router, security, user, run_id, concurrency, self._flooding, self._stop, self._ready, self._results),
            daemon=True,
        )
        self._process.start()

    async def ready(self, timeout_s: float = 60.0) -> None:
        if not await asyncio.to_thread(self._ready.wait, timeout_s):
            raise TimeoutError(f"the flooding client did not connect within {timeout_s:g} s")

    def flood(self, on: bool) -> None:
        (self._flooding.set if on else self._flooding.clear)()

    async def finish(self, timeout_s: float = 60.0) -> LoadResult:
        self._stop.set()
        summary = await asyncio.to_thread(self._results.get, True, timeout_s)
        await asyncio.to_thread(self._process.join, timeout_s)
        out = LoadResult(sent=summary["sent"], elapsed_s=summary["elapsed_s"], client_cpu_s=summary["client_cpu_s"])
        out.outcomes.update(summary["outcomes"])
        return out


# ---- the bare baseline -------------------------------------------------------------------------


async def run_echo(target: str, payload: bytes, count: int, concurrency: int, streams: int = 0, replies: int = 1
                   ) -> float:
    """Calls per second against the bare echo server (services.bench.echo): unary with
    `concurrency` callers, or (streams > 0) `concurrency` messages in flight over `streams`
    bidirectional streams, each answered `replies` times."""
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        started = time.perf_counter()
        if not streams:
            unary = channel.unary_unary(echo.UNARY)
            left = iter(range(count))

            async def caller() -> None:
                for _ in left:
                    await unary(payload, timeout=30)

            await asyncio.gather(*(caller() for _ in range(concurrency)))
        else:
            bidi = channel.stream_stream(echo.STREAM)
            windows = split_window(concurrency, streams)

            async def stream(n: int, window: int) -> None:
                slots = asyncio.Semaphore(window)

                async def requests() -> AsyncIterator[bytes]:
                    for _ in range(n):
                        await slots.acquire()
                        yield payload

                seen = 0
                async for _ in bidi(requests(), metadata=(("n", str(replies)),), timeout=300):
                    seen += 1
                    if seen % replies == 0:
                        slots.release()

            shares = [count // len(windows) + (1 if i < count % len(windows) else 0) for i in range(len(windows))]
            await asyncio.gather(*(stream(n, w) for n, w in zip(shares, windows, strict=True)))
        return count / (time.perf_counter() - started)
