"""Every persisted fill and final state, handed to the permission service's position manager.

The ledger keeps a cursor (the last update acknowledged); the feed reads what follows it, sends
each batch it reads to `apply_batch` in one call (in order, applied in one transaction) and moves
the cursor after each batch. A crash of either side only means some updates are sent again, and
the permission service applies each fill once (it keeps the ids it has applied), so positions
and reservations end exactly right. An unreachable permission service delays the feed; it never
blocks the ledger's writers.

A batch the permission service refuses for good (one malformed update refuses all of it, or a
permission service too old to know the batched call) is sent again one update at a time through
`apply`, so that only the refused update is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

import grpc
from nija.common.v1 import common_pb2

from services.aggregator.ledger import Ledger
from services.domain.retry import backoff
from services.runtime.aio import wait_set
from services.runtime.channels import raise_if_cancelled
from services.runtime.errors import ServiceError

log = logging.getLogger(__name__)

FEED_NAME = "permission-positions"

_RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,  # our token not (yet) known: an operator can fix that
    grpc.StatusCode.INTERNAL,
)


class PositionFeed:
    def __init__(
        self,
        ledger: Ledger,
        apply: Callable[[common_pb2.ExecutionUpdate], Awaitable[int]],
        batch: int = 200,
        idle_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        apply_batch: Callable[[Sequence[common_pb2.ExecutionUpdate]], Awaitable[int]] | None = None,
    ) -> None:
        """`apply_batch` (None: every update through `apply`) takes up to `batch` updates."""
        self._ledger = ledger
        self._apply = apply
        self._apply_batch = apply_batch
        self._batch = batch
        self._idle_s = idle_s
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self, _update: common_pb2.ExecutionUpdate | None = None) -> None:
        """Something was committed: look now rather than at the next idle tick."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="position-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def drain_once(self) -> int:
        """Send everything pending now; returns how many updates were sent."""
        sent = 0
        while True:
            rows = await self._ledger.feed(FEED_NAME, self._batch)
            if not rows:
                return sent
            updates = [update for _, update in rows]
            if self._apply_batch is None or not await self._send_batch(updates):
                for update in updates:
                    await self._send(update)
            await self._ledger.advance_feed(FEED_NAME, rows[-1][0])
            sent += len(rows)

    async def _send_batch(self, updates: list[common_pb2.ExecutionUpdate]) -> bool:
        """True once applied; False when refused for good (the caller sends them one by one)."""
        assert self._apply_batch is not None
        delays = backoff(0.1, 5.0, random.Random())
        while True:
            try:
                await self._apply_batch(updates)
                return True
            except ServiceError as exc:
                raise_if_cancelled()  # stopping: never skip an update for that
                if exc.code not in _RETRYABLE:
                    log.warning(
                        "position feed: batch refused; sending its updates one by one",
                        extra={"updates": len(updates), "code": exc.code.name, "reason": exc.reason,
                               "detail": exc.message},
                    )
                    return False
                delay = next(delays)
                log.warning(
                    "position feed: permission service refused or unreachable; retrying the batch",
                    extra={"updates": len(updates), "reason": exc.reason, "retry_in_s": round(delay, 3)},
                )
                await self._sleep(delay)

    async def _send(self, update: common_pb2.ExecutionUpdate) -> None:
        delays = backoff(0.1, 5.0, random.Random())
        while True:
            try:
                await self._apply(update)
                return
            except ServiceError as exc:
                raise_if_cancelled()  # stopping: never skip an update for that
                if exc.code not in _RETRYABLE:
                    # Retrying cannot help and would stop every later update: skip, loudly.
                    log.error("position feed: update refused, skipped",
                              extra={"signal_id": update.signal_id, "code": exc.code.name, "reason": exc.reason})
                    return
                delay = next(delays)
                log.warning(
                    "position feed: permission service refused or unreachable; retrying",
                    extra={"signal_id": update.signal_id, "reason": exc.reason, "retry_in_s": round(delay, 3)},
                )
                await self._sleep(delay)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.drain_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("position feed failed; retrying")
            await wait_set(self._wake, self._idle_s)
