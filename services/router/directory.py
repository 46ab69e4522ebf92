"""What the router knows about every executor, kept current by the executors themselves.

For each executor the router holds two long-lived streams on one channel:
  - `WatchExecutorInfo`: fees, pairs with their books, queue depth, success rate, latency,
    breaker state, pushed as they change (and at least every second);
  - `grpc.health.v1.Health/Watch` on the executor's service name: SERVING or not.
A signal never waits on either: scoring reads the last snapshot. A broken stream, a NOT_SERVING
status or info older than `stale_after_s` makes the executor unhealthy at once; both streams
reconnect on their own and readmit it when it serves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2, executor_pb2_grpc

from services.domain.scoring import BookSide, BrokerSnapshot, PairLiquidity
from services.runtime.aio import wait_set
from services.runtime.channels import open_channel, raise_if_cancelled
from services.runtime.security import Security

log = logging.getLogger(__name__)

EXECUTOR_SERVICE = "nija.executor.v1.ExecutorService"


def _levels(levels: Sequence[common_pb2.BookLevel]) -> BookSide:
    return tuple((Decimal(lvl.price), Decimal(lvl.quantity)) for lvl in levels)


def pair_liquidity(p: executor_pb2.PairInfo) -> PairLiquidity:
    return PairLiquidity(
        bid_usd=Decimal(p.bid_liquidity_usd or "0"),
        ask_usd=Decimal(p.ask_liquidity_usd or "0"),
        bids=_levels(p.bids),
        asks=_levels(p.asks),
        withdrawal_fee=Decimal(p.withdrawal_fee or "0"),
    )


class PairCache:
    """Each pair's parsed liquidity, parsed again only when its encoding changes: an executor
    pushes every pair's book on every change of its queue, while a book changes about once a
    second."""

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[bytes, PairLiquidity]] = {}

    def __call__(self, p: executor_pb2.PairInfo) -> PairLiquidity:
        encoded = p.SerializeToString()
        hit = self._parsed.get(p.pair)
        if hit is not None and hit[0] == encoded:
            return hit[1]
        parsed = pair_liquidity(p)
        self._parsed[p.pair] = (encoded, parsed)
        return parsed


def snapshot_from_info(
    broker: str,
    info: executor_pb2.ExecutorInfo,
    healthy: bool,
    parse_pair: Callable[[executor_pb2.PairInfo], PairLiquidity] = pair_liquidity,
) -> BrokerSnapshot:
    return BrokerSnapshot(
        broker=broker,
        healthy=healthy and info.breaker_state != common_pb2.BREAKER_STATE_OPEN,
        maker_fee=Decimal(info.maker_fee or "0"),
        taker_fee=Decimal(info.taker_fee or "0"),
        avg_latency_ms=info.avg_latency_ms,
        success_rate=info.success_rate,
        queue_depth=info.queue_depth,
        max_queue=info.max_queue_size,
        requires_api_keys=info.requires_api_keys,
        pairs={p.pair: parse_pair(p) for p in info.pairs},
    )


@dataclasses.dataclass
class _Entry:
    broker: str
    target: str
    channel: grpc.aio.Channel
    stub: executor_pb2_grpc.ExecutorServiceStub
    health: health_pb2_grpc.HealthStub
    info: executor_pb2.ExecutorInfo | None = None
    info_live: bool = False
    serving: bool = False
    seen_at: float = 0.0
    snapshot: BrokerSnapshot | None = None
    pairs: PairCache = dataclasses.field(default_factory=PairCache)


class ExecutorDirectory:
    def __init__(
        self,
        targets: Mapping[str, str],
        stale_after_s: float = 3.0,
        push_interval_ms: int = 500,
        reconnect_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        security: Security | None = None,
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        for broker, target in targets.items():
            channel = open_channel(target, security)
            self._entries[broker] = _Entry(
                broker,
                target,
                channel,
                executor_pb2_grpc.ExecutorServiceStub(channel),
                health_pb2_grpc.HealthStub(channel),
            )
        self._stale_after_s = stale_after_s
        self._push_interval_ms = push_interval_ms
        self._reconnect_s = reconnect_s
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        # Bumped on every change a router would route differently on; waiters use it in tests.
        self.changes = 0
        self._changed = asyncio.Event()

    @property
    def brokers(self) -> list[str]:
        return sorted(self._entries)

    def info(self, broker: str) -> executor_pb2.ExecutorInfo | None:
        """The last info `broker`'s executor pushed (None before the first)."""
        return self._entries[broker].info

    def stub(self, broker: str) -> executor_pb2_grpc.ExecutorServiceStub:
        return self._entries[broker].stub

    def start(self) -> None:
        for entry in self._entries.values():
            self._tasks.append(asyncio.create_task(self._follow_info(entry), name=f"info-{entry.broker}"))
            self._tasks.append(asyncio.create_task(self._follow_health(entry), name=f"health-{entry.broker}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for entry in self._entries.values():
            await entry.channel.close()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `predicate()` holds after some change (tests and start-up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await wait_set(self._changed, min(remaining, self._stale_after_s))
        return True

    def _changed_now(self, entry: _Entry) -> None:
        entry.snapshot = None
        self.changes += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def _follow_info(self, entry: _Entry) -> None:
        while True:
            call = entry.stub.WatchExecutorInfo(
                executor_pb2.WatchExecutorInfoRequest(max_interval_ms=self._push_interval_ms)
            )
            try:
                async for response in call:
                    entry.info = response.info
                    entry.info_live = True
                    entry.seen_at = self._clock()
                    self._changed_now(entry)
            except grpc.aio.AioRpcError as exc:
                raise_if_cancelled()
                if entry.info_live:
                    log.warning("executor info stream lost", extra={"broker": entry.broker, "code": exc.code().name})
            finally:
                call.cancel()
            if entry.info_live:
                entry.info_live = False
                self._changed_now(entry)
            await asyncio.sleep(self._reconnect_s)

    async def _follow_health(self, entry: _Entry) -> None:
        while True:
            call = entry.health.Watch(health_pb2.HealthCheckRequest(service=EXECUTOR_SERVICE))
            try:
                async for response in call:
                    serving = response.status == health_pb2.HealthCheckResponse.SERVING
                    if serving != entry.serving:
                        log.info("executor %s", "serving" if serving else "not serving", extra={"broker": entry.broker})
                        entry.serving = serving
                        self._changed_now(entry)
            except grpc.aio.AioRpcError:
                raise_if_cancelled()
            finally:
                call.cancel()
            if entry.serving:
                log.warning("executor unreachable", extra={"broker": entry.broker})
                entry.serving = False
                self._changed_now(entry)
            await asyncio.sleep(self._reconnect_s)

    def snapshots(self) -> dict[str, BrokerSnapshot]:
        """Every executor that has reported at least once; unreachable, not serving or stale ones
        are marked unhealthy (and so excluded from routing)."""
        now = self._clock()
        out = {}
        for broker, entry in self._entries.items():
            if entry.info is None:
                continue
            healthy = entry.serving and entry.info_live and now - entry.seen_at <= self._stale_after_s
            snap = entry.snapshot
            if snap is None or snap.healthy != healthy:
                snap = entry.snapshot = snapshot_from_info(broker, entry.info, healthy, entry.pairs)
            out[broker] = snap
        return out
