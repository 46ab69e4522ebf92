"""Orders nobody will route: a PENDING order whose router stopped (killed, or its task lost)
after the ledger created it and before it routed it.

Nothing was sent anywhere for such an order: a router records ROUTING before it asks any
executor to place anything. So once it has been PENDING for `stale_pending_s`, the sweep ends it
FAILED. Its reservation is then released by its final state, as for any other order, and a
client that re-attaches is told why.

The ledger decides each write in one transaction, so a sweep and a late router cannot both win.
If the router's ROUTING lands first, the order is no longer PENDING and the sweep leaves it
(Ledger.record_if_pending checks that in the sweep's own transaction). If the sweep lands first,
the router's ROUTING is an illegal transition, and that router never asks an executor.

A just-started aggregator sweeps nothing for `stale_pending_s`: routers whose writes failed
while it was down are retrying them, and they get that long to reach it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from google.protobuf import timestamp_pb2
from nija.common.v1 import common_pb2

from services.aggregator.ledger import Ledger
from services.domain.signal import PARENT_KEY
from services.domain.states import Status
from services.runtime.wire import STATUS_TO_PB

log = logging.getLogger(__name__)

ABANDONED_REASON = (
    "not routed: the router that took this signal stopped before routing it; nothing was sent to any "
    "exchange (submit it again under a new signal id to trade it)"
)


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    stale_pending_s: float = 60.0
    every_s: float = 10.0
    batch: int = 100


def abandoned_update(order_signal: common_pb2.TradeSignal, now: timestamp_pb2.Timestamp) -> common_pb2.ExecutionUpdate:
    """The FAILED update that ends a never-routed order (one update id per order: a repeat is a no-op)."""
    return common_pb2.ExecutionUpdate(
        signal_id=order_signal.signal_id,
        user_id=order_signal.user_id,
        status=STATUS_TO_PB[Status.FAILED],
        pair=order_signal.pair,
        side=order_signal.side,
        reason=ABANDONED_REASON,
        time=now,
        update_id=f"{order_signal.signal_id}:abandoned",
        parent_signal_id=order_signal.metadata.get(PARENT_KEY, ""),
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
        """End every order PENDING for longer than `stale_pending_s`; returns how many it ended."""
        now = self._clock()
        if now - self._started < self._config.stale_pending_s:
            return 0
        cutoff = timestamp_pb2.Timestamp()
        cutoff.FromNanoseconds(int((now - self._config.stale_pending_s) * 1e9))
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(int(now * 1e9))
        ended = 0
        for order in await self._ledger.stale_pending(cutoff, self._config.batch):
            recorded = await self._ledger.record_if_pending(abandoned_update(order.signal, stamp))
            if recorded is not None and not recorded.duplicate:  # None: its router routed it meanwhile
                ended += 1
                log.warning("a never-routed order was ended FAILED",
                            extra={"user_id": order.user_id, "signal_id": order.signal_id})
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
