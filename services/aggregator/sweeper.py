"""Orders nobody will carry on: an order its router stopped with (killed, or its task lost)
after the ledger created it (PENDING) or after it recorded the route (ROUTING), before the
executor took it.

Nothing was sent to any exchange for either. A router records ROUTING before it asks an
executor, and an executor records QUEUED before it places anything; when that record is
refused, it places nothing. So an order left PENDING or ROUTING with no update for `stale_s`
is ended FAILED. Its reservation is then released by its final state, as for any other order,
and a client that re-attaches is told why.

The ledger decides each write in one transaction, so a sweep and a late writer cannot both win.
Ledger.record_if_unchanged checks, in the sweep's own transaction, that the order's last update
is still the one the sweep saw. If a router's ROUTING or an executor's QUEUED landed first, the
sweep leaves the order. If the sweep landed first, their write is an illegal transition and they
send nothing: a router never asks an executor, and an executor never places it, even one
recovering it from its journal after a restart.

A just-started aggregator sweeps nothing for `stale_s`: routers and executors whose writes
failed while it was down are retrying them, and they get that long to reach it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from google.protobuf import timestamp_pb2
from nija.aggregator.v1 import aggregator_pb2
from nija.common.v1 import common_pb2

from services.aggregator.ledger import Ledger
from services.domain.signal import PARENT_KEY
from services.domain.states import Status
from services.runtime.wire import STATUS_TO_PB

log = logging.getLogger(__name__)

NOT_ROUTED = (
    "not routed: the router that took this signal stopped before routing it; nothing was sent to any "
    "exchange (submit it again under a new signal id to trade it)"
)
NOT_TAKEN = (
    "not executed: {broker} never took this order (the router that routed it stopped before handing it "
    "over); nothing was sent to any exchange (submit it again under a new signal id to trade it)"
)
SWEPT = (Status.PENDING, Status.ROUTING)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    stale_s: float = 60.0
    every_s: float = 10.0
    batch: int = 100


def abandoned_update(order: aggregator_pb2.Order, now: timestamp_pb2.Timestamp) -> common_pb2.ExecutionUpdate:
    """The FAILED update that ends an order nobody carries on (one update id per order: a repeat
    is a no-op)."""
    signal = order.signal
    routed = order.status == STATUS_TO_PB[Status.ROUTING]
    return common_pb2.ExecutionUpdate(
        signal_id=signal.signal_id,
        user_id=signal.user_id,
        status=STATUS_TO_PB[Status.FAILED],
        broker=order.broker if routed else "",
        pair=signal.pair,
        side=signal.side,
        reason=NOT_TAKEN.format(broker=order.broker) if routed else NOT_ROUTED,
        time=now,
        update_id=f"{signal.signal_id}:abandoned",
        parent_signal_id=signal.metadata.get(PARENT_KEY, ""),
    )


class Sweeper:
    def __init__(
        self,
        ledger: Ledger,
        config: SweepConfig,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._ledger = ledger
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._started = clock()

    async def sweep_once(self) -> int:
        """End every order left PENDING or ROUTING with no update for `stale_s`; returns how many."""
        now = self._clock()
        if now - self._started < self._config.stale_s:
            return 0
        cutoff, stamp = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
        cutoff.FromNanoseconds(int((now - self._config.stale_s) * 1e9))
        stamp.FromNanoseconds(int(now * 1e9))
        ended = 0
        for status in SWEPT:
            for order in await self._ledger.stale(status, cutoff, self._config.batch):
                recorded = await self._ledger.record_if_unchanged(abandoned_update(order, stamp), order.last_sequence)
                if recorded is not None and not recorded.duplicate:  # None: carried on meanwhile
                    ended += 1
                    log.warning("an order nobody carried on was ended FAILED",
                                extra={"user_id": order.user_id, "signal_id": order.signal_id, "was": status.value})
        return ended

    async def run(self) -> None:
        while True:
            await self._sleep(self._config.every_s)
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next sweep tries again; the ledger being away is no reason to stop
                log.exception("the stale-order sweep failed")
