"""The ledger's feed to the permission service: what it sends, in order, once per cursor, through
outages, and from where it left off after a restart."""

from __future__ import annotations


import grpc
import pytest
from nija.common.v1 import common_pb2 as c

from services.aggregator.ledger import Ledger
from services.aggregator.position_feed import PositionFeed
from services.runtime.errors import ServiceError
from tests.unit.test_ledger import fill, to_executing, update


async def _no_sleep(_: float) -> None:
    return None


async def _orders(ledger: Ledger) -> None:
    """s1 fills in two parts; s2 stays executing; s3 is rejected."""
    await to_executing(ledger, "s1")
    await ledger.record(update(c.EXECUTION_STATUS_PARTIAL_FILL, "s1:p1", "s1", fills=[fill("t1", "0.001")], broker="kraken"))
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "s1:f", "s1", fills=[fill("t2", "0.001")], broker="kraken"))
    await to_executing(ledger, "s2")
    await ledger.create_order(c.TradeSignal(signal_id="s3", user_id="u1", pair="BTC-USD", side=c.SIDE_BUY,
                                            size_usd="100", signal_type=c.SIGNAL_TYPE_ENTRY))
    await ledger.record(update(c.EXECUTION_STATUS_REJECTED, "s3:r", "s3", reason="no"))


async def test_the_feed_sends_creations_fills_and_final_states_in_order_and_resumes_after_a_restart(database_url: str):
    path = database_url
    ledger = await Ledger(path).open()
    await _orders(ledger)
    sent: list[str] = []
    failures = iter([ServiceError(grpc.StatusCode.UNAVAILABLE, "DOWN", "permission is restarting")] * 3)

    async def apply(u: c.ExecutionUpdate) -> int:
        failure = next(failures, None)
        if failure is not None:
            raise failure  # the outage: retried with backoff, nothing skipped
        sent.append(u.update_id)
        return len(u.fills)

    feed = PositionFeed(ledger, apply, batch=2, sleep=_no_sleep)
    assert await feed.drain_once() == 6
    assert sent == ["s1:pending", "s1:p1", "s1:f", "s2:pending", "s3:pending", "s3:r"]
    assert await feed.drain_once() == 0

    # More after a restart of the aggregator: only what is new is sent.
    await ledger.record(update(c.EXECUTION_STATUS_FILLED, "s2:f", "s2", fills=[fill("t3", "0.001")], broker="kraken"))
    await ledger.close()
    ledger = await Ledger(path).open()
    sent.clear()
    assert await PositionFeed(ledger, apply, sleep=_no_sleep).drain_once() == 1
    assert sent == ["s2:f"]
    await ledger.close()


async def test_an_update_the_permission_service_refuses_for_good_is_skipped_not_retried_forever(database_url: str):
    ledger = await Ledger(database_url).open()
    await _orders(ledger)
    attempts: list[str] = []

    async def apply(u: c.ExecutionUpdate) -> int:
        attempts.append(u.update_id)
        if u.update_id == "s1:p1":
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "BAD_FILL", "malformed")
        return 0

    assert await PositionFeed(ledger, apply, sleep=_no_sleep).drain_once() == 6
    assert attempts.count("s1:p1") == 1 and attempts[-1] == "s3:r"
    await ledger.close()


# Batches (issue 10): one call per batch read from the ledger, one by one only when refused.


async def test_each_batch_read_from_the_ledger_goes_in_one_call_retried_whole_through_an_outage(database_url: str):
    ledger = await Ledger(database_url).open()
    await _orders(ledger)
    calls: list[list[str]] = []
    failures = iter([ServiceError(grpc.StatusCode.UNAVAILABLE, "DOWN", "permission is restarting")] * 2)

    async def apply_batch(updates) -> int:  # type: ignore[no-untyped-def]
        failure = next(failures, None)
        if failure is not None:
            raise failure
        calls.append([u.update_id for u in updates])
        return sum(len(u.fills) for u in updates)

    async def apply(u: c.ExecutionUpdate) -> int:
        raise AssertionError(f"{u.update_id} sent alone")

    feed = PositionFeed(ledger, apply, batch=4, sleep=_no_sleep, apply_batch=apply_batch)
    assert await feed.drain_once() == 6
    assert calls == [["s1:pending", "s1:p1", "s1:f", "s2:pending"], ["s3:pending", "s3:r"]]
    assert await feed.drain_once() == 0
    await ledger.close()


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED])
async def test_a_batch_refused_for_good_is_sent_one_by_one_so_only_the_bad_update_is_skipped(
    database_url: str, code: grpc.StatusCode
):
    ledger = await Ledger(database_url).open()
    await _orders(ledger)
    batches: list[int] = []
    applied: list[str] = []
    attempts: list[str] = []

    async def apply_batch(updates) -> int:  # type: ignore[no-untyped-def]
        batches.append(len(updates))
        if code is grpc.StatusCode.UNIMPLEMENTED:  # a permission service from before batches
            raise ServiceError(code, "UNIMPLEMENTED", "Method not found!")
        ids = [u.update_id for u in updates]
        if "s1:p1" in ids:
            raise ServiceError(code, "BAD_FILL", f"executions[{ids.index('s1:p1')}]: malformed")
        applied.extend(ids)
        return 0

    async def apply(u: c.ExecutionUpdate) -> int:
        attempts.append(u.update_id)
        if u.update_id == "s1:p1":
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "BAD_FILL", "malformed")
        applied.append(u.update_id)
        return 0

    feed = PositionFeed(ledger, apply, batch=3, sleep=_no_sleep, apply_batch=apply_batch)
    assert await feed.drain_once() == 6
    assert batches == [3, 3]  # each refused batch tried once, never retried
    # Everything but the bad update applied, in order; the bad one tried once and skipped.
    assert applied == ["s1:pending", "s1:f", "s2:pending", "s3:pending", "s3:r"]
    assert attempts.count("s1:p1") == 1
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert attempts == ["s1:pending", "s1:p1", "s1:f"]  # only the refused batch went one by one
    await ledger.close()
