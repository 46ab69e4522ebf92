"""A caller whose SubmitSignal stream breaks re-attaches by signal_id and after_sequence (issue 6,
"the router's SubmitSignal stream is resumable"); the order never depends on the caller staying."""

from __future__ import annotations


import grpc
import pytest
from nija.router.v1 import router_pb2

from services.runtime.wire import status_name
from tests.harness import InProcessMesh, signal


@pytest.mark.parametrize("cut_after", [1, 2, 3])  # after pending, routing, queued
async def test_a_caller_gone_mid_stream_comes_back_for_the_rest(mesh: InProcessMesh, cut_after: int) -> None:
    pb = signal(user="bob", pair="ETH-USD", usd="200", signal_id=f"reattach-{cut_after}")
    first = []
    call = mesh.router.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=30)
    async for response in call:
        first.append(response.update)
        if len(first) == cut_after:
            call.cancel()  # the client goes away
            break
    assert call.cancelled()

    rest = []
    async for response in mesh.router.SubmitSignal(
        router_pb2.SubmitSignalRequest(signal=pb, after_sequence=first[-1].sequence), timeout=30
    ):
        rest.append(response.update)
    updates = first + rest
    # Every update once, in order, to the end: the order went on while nobody listened.
    assert [u.sequence for u in updates] == list(range(updates[0].sequence, updates[0].sequence + len(updates)))
    assert status_name(updates[-1].status) == "filled"
    stored = mesh.ledger_rows("SELECT count(*) FROM updates WHERE signal_id = ?", pb.signal_id)[0][0]
    assert stored == len(updates)


async def test_re_attaching_after_the_end_ends_at_once(mesh: InProcessMesh) -> None:
    """A client that already saw the terminal update (or asks from past it) gets an empty stream
    that ends, not one that waits for its deadline."""
    pb = signal(user="bob", pair="ETH-USD", usd="200", signal_id="reattach-after-end")
    updates = [r.update async for r in mesh.router.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=30)]
    assert status_name(updates[-1].status) == "filled"
    for after in (updates[-1].sequence, updates[-1].sequence + 100):
        call = mesh.router.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb, after_sequence=after), timeout=3)
        assert [r async for r in call] == []
        assert await call.code() == grpc.StatusCode.OK
    # From before the end, the rest still arrives and ends with the terminal update.
    call = mesh.router.SubmitSignal(
        router_pb2.SubmitSignalRequest(signal=pb, after_sequence=updates[-2].sequence), timeout=3)
    assert [r.update.sequence async for r in call] == [updates[-1].sequence]
