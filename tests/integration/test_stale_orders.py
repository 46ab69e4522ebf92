"""An order whose router stopped between the ledger creating it and routing it (a router killed
at that moment: `nija chaos` found one; the ROUTING case is the same, in
tests/unit/test_aggregator_sweeper.py) is ended FAILED by the aggregator's sweep, through the
same write path as every update: a client re-attaching is told why, and nothing was placed."""

from __future__ import annotations

import time

from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
from nija.router.v1 import router_pb2

from services.aggregator.sweeper import NOT_ROUTED
from services.runtime.wire import status_name
from tests.harness import InProcessMesh, signal


async def test_a_never_routed_order_is_ended_failed_and_a_client_reattaching_is_told(mesh: InProcessMesh) -> None:
    # What a router that died right after CreateOrder leaves behind: a PENDING order, nobody driving it.
    pb = signal(user="alice", usd="40", signal_id="router-died-here")
    as_router = aggregator_pb2_grpc.AggregatorServiceStub(mesh.channel("aggregator", mesh.tokens.services["router"]))
    created = await as_router.CreateOrder(aggregator_pb2.CreateOrderRequest(signal=pb, submission_id="x"), timeout=10)
    assert created.created

    sweeper = mesh.servers["aggregator"].app.sweeper
    assert await sweeper.sweep_once() == 0  # young, and the aggregator has only just started
    sweeper._clock = lambda: time.time() + 3600  # an hour on: long stale
    assert await sweeper.sweep_once() == 1

    order = await mesh.aggregator.GetOrder(aggregator_pb2.GetOrderRequest(user_id="alice", signal_id=pb.signal_id))
    assert status_name(order.order.status) == "failed" and order.order.broker == ""  # never routed anywhere
    # The client comes back with the same signal: told the order's story, ending FAILED with the reason.
    again = [r.update async for r in mesh.router.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=30)]
    assert [status_name(u.status) for u in again] == ["pending", "failed"]
    assert again[-1].reason == NOT_ROUTED
    # No exchange saw it.
    fills = await mesh.aggregator.ListFills(aggregator_pb2.ListFillsRequest(user_id="alice", signal_id=pb.signal_id))
    assert list(fills.fills) == []
