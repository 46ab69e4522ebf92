"""One watcher's stream: the user's persisted updates after a sequence, then live ones.

No gap and no duplicate across the switch: the live subscription is taken *before* the replay is
read, so anything committed after the read is already buffered; live items at or below the last
replayed sequence were in the replay and are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from nija.common.v1 import common_pb2

from services.aggregator.hub import Hub, Overflowed
from services.aggregator.ledger import Ledger
from services.runtime.errors import ServiceError
from services.runtime.wire import STATUS_FROM_PB


def _ends(update: common_pb2.ExecutionUpdate) -> bool:
    return STATUS_FROM_PB[update.status].terminal


async def _is_over(ledger: Ledger, user_id: str, signal_id: str) -> bool:
    try:
        order = await ledger.get_order(user_id, signal_id)
    except ServiceError as exc:
        if exc.code is grpc.StatusCode.NOT_FOUND:  # not created yet: watched until it is
            return False
        raise
    return STATUS_FROM_PB[order.status].terminal


async def watch(
    ledger: Ledger,
    hub: Hub,
    user_id: str,
    after_sequence: int = 0,
    signal_id: str | None = None,
    page: int = 500,
) -> AsyncIterator[common_pb2.ExecutionUpdate]:
    """With `signal_id`, only that signal's updates, ending after its terminal update."""
    last = after_sequence
    with hub.subscribe(user_id) as live:
        # Read before the replay: an order already over whose terminal update is at or before
        # `after_sequence` has nothing more to send (a client re-attaching after the end).
        finished = bool(signal_id) and await _is_over(ledger, user_id, signal_id or "")
        while True:
            batch = await ledger.replay(user_id, last, signal_id, page)
            for update in batch:
                yield update
                last = update.sequence
                if signal_id and _ends(update):
                    return
            if len(batch) < page:
                break
        if finished:
            return
        while True:
            try:
                update = await live.next()
            except Overflowed:
                raise ServiceError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "WATCHER_TOO_SLOW",
                    f"watcher fell more than {hub.capacity} updates behind; resume after "
                    f"sequence {last}",
                    last_sequence=str(last),
                ) from None
            if update.sequence <= last or (signal_id and update.signal_id != signal_id):
                continue
            yield update
            last = update.sequence
            if signal_id and _ends(update):
                return
