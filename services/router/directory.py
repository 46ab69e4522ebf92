"""What the router knows about every executor, kept current in the background.

Each executor is polled for its info on a fixed interval over its own long-lived channel, so a
signal never waits on an info RPC: scoring reads the last snapshot. An executor that stops
answering, or whose info is older than `stale_after_s`, counts as unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from decimal import Decimal

import grpc
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2, executor_pb2_grpc

from services.domain.scoring import BrokerSnapshot, PairLiquidity
from services.runtime.channels import open_channel

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Entry:
    broker: str
    target: str
    channel: grpc.aio.Channel
    stub: executor_pb2_grpc.ExecutorServiceStub
    info: executor_pb2.ExecutorInfo | None = None
    reachable: bool = False
    seen_at: float = 0.0


def snapshot_from_info(broker: str, info: executor_pb2.ExecutorInfo, healthy: bool) -> BrokerSnapshot:
    return BrokerSnapshot(
        broker=broker,
        healthy=healthy and info.breaker_state != common_pb2.BREAKER_STATE_OPEN,
        maker_fee=Decimal(info.maker_fee or "0"),
        avg_latency_ms=info.avg_latency_ms,
        success_rate=info.success_rate,
        queue_depth=info.queue_depth,
        max_queue=info.max_queue_size,
        pairs={
            p.pair: PairLiquidity(
                bid_usd=Decimal(p.bid_liquidity_usd or "0"), ask_usd=Decimal(p.ask_liquidity_usd or "0")
            )
            for p in info.pairs
        },
    )


class ExecutorDirectory:
    def __init__(
        self,
        targets: Mapping[str, str],
        refresh_s: float = 0.5,
        stale_after_s: float = 5.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries = {}
        for broker, target in targets.items():
            channel = open_channel(target)
            self._entries[broker] = _Entry(broker, target, channel, executor_pb2_grpc.ExecutorServiceStub(channel))
        self._refresh_s = refresh_s
        self._stale_after_s = stale_after_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def brokers(self) -> list[str]:
        return sorted(self._entries)

    def stub(self, broker: str) -> executor_pb2_grpc.ExecutorServiceStub:
        return self._entries[broker].stub

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._poll(e), name=f"poll-{e.broker}") for e in self._entries.values()]

    async def refresh_once(self) -> None:
        await asyncio.gather(*(self._fetch(e) for e in self._entries.values()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for entry in self._entries.values():
            await entry.channel.close()

    async def _poll(self, entry: _Entry) -> None:
        while True:
            await self._fetch(entry)
            await asyncio.sleep(self._refresh_s)

    async def _fetch(self, entry: _Entry) -> None:
        try:
            response = await entry.stub.GetExecutorInfo(
                executor_pb2.GetExecutorInfoRequest(), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if entry.reachable:
                log.warning("executor unreachable", extra={"broker": entry.broker, "code": exc.code().name})
            entry.reachable = False
            return
        entry.info = response.info
        entry.reachable = True
        entry.seen_at = self._clock()

    def snapshots(self) -> dict[str, BrokerSnapshot]:
        """Every executor that has reported at least once; stale or unreachable ones unhealthy."""
        now = self._clock()
        out = {}
        for broker, entry in self._entries.items():
            if entry.info is None:
                continue
            fresh = entry.reachable and now - entry.seen_at <= self._stale_after_s
            out[broker] = snapshot_from_info(broker, entry.info, healthy=fresh)
        return out
