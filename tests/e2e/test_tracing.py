"""One signal is one trace through the real processes (issue 7, acceptance 1).

`nija up --trace` makes every service write its spans to the local store (data-dir/traces, one
JSON-lines file per process); a TWAP signal's trace must span router, permission, executor and
aggregator, every span's parent must be in it, each slice must sit under the executor's order,
and `nija trace` must print that tree.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from nija.common.v1 import common_pb2
from nija.router.v1 import router_pb2, router_pb2_grpc

from services import trace_view
from services.runtime.channels import open_channel
from services.runtime.wire import status_name
from tests.e2e.up import UpMesh, start_up

pytestmark = pytest.mark.e2e

SIGNAL = "trace-twap-1"
KINDS = ("router", "permission", "executor", "aggregator")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    # Spans are exported in batches: every 100 ms here instead of the default 5 s.
    up = start_up(tmp_path_factory.mktemp("tracing"), "--trace", env={"OTEL_BSP_SCHEDULE_DELAY": "100"})
    yield up
    assert up.stop() == 0


async def _submit(mesh: UpMesh) -> list[common_pb2.ExecutionUpdate]:
    pb = common_pb2.TradeSignal(signal_id=SIGNAL, user_id="alice", pair="BTC-USD", side=common_pb2.SIDE_BUY,
                                size_usd="12000", signal_type=common_pb2.SIGNAL_TYPE_ENTRY, strategy="trace")
    async with open_channel(mesh.targets["router"], mesh.security()) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        return [r.update async for r in stub.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=60)]


def _trace(mesh: UpMesh) -> list[trace_view.Span]:
    """The signal's trace once every process exported its part of it."""
    deadline = time.monotonic() + 15
    while True:
        traces = trace_view.traces_for(trace_view.load_spans(mesh.dir / "traces"), SIGNAL)
        if traces:
            names = {s.name for s in traces[0]}
            kinds = {s.service.split("-")[0] for s in traces[0]}
            if set(KINDS) <= kinds and {trace_view.SUBMIT, "executor.order"} <= names:
                return traces[0]
        if time.monotonic() > deadline:
            pytest.fail(f"no complete trace for {SIGNAL}: {[sorted({s.service for s in t}) for t in traces]}")
        time.sleep(0.1)


def test_a_twap_signal_is_one_trace_across_the_processes_and_nija_trace_prints_it(mesh: UpMesh) -> None:
    updates = asyncio.run(_submit(mesh))
    assert status_name(updates[-1].status) == "filled"
    broker = updates[-1].broker
    trace = _trace(mesh)

    by_id = {s.span_id: s for s in trace}
    assert len({s.trace_id for s in trace}) == 1
    (root,) = [s for s in trace if s.parent_id not in by_id]
    assert (root.name, root.service, root.kind) == (trace_view.SUBMIT, "router", "server")
    assert root.attributes["nija.signal_id"] == SIGNAL and root.attributes["nija.status"] == "filled"

    def parent(span: trace_view.Span) -> trace_view.Span:
        return by_id[span.parent_id]

    def server(name: str) -> list[trace_view.Span]:
        return [s for s in trace if s.name == name and s.kind == "server"]

    # router -> permission (the reservation, inside the routing decision)
    (reserve,) = server("/nija.permission.v1.PermissionService/ReserveTrade")
    assert reserve.service == "permission"
    assert (parent(reserve).service, parent(parent(reserve)).name) == ("router", "router.decide")

    # router -> executor: the order, its queue wait, its three slices, each with a venue call
    (execute,) = server("/nija.executor.v1.ExecutorService/Execute")
    assert execute.service == f"executor-{broker}"
    assert parent(parent(execute)) is root
    (order,) = [s for s in trace if s.name == "executor.order"]
    assert parent(order) is execute and order.attributes["nija.status"] == "filled"
    assert parent(next(s for s in trace if s.name == "executor.queue_wait")) is execute
    slices = sorted((s for s in trace if s.name == "executor.twap_slice"), key=lambda s: s.attributes["nija.leg"])
    assert [s.attributes["nija.leg"] for s in slices] == [0, 1, 2]
    assert all(parent(s) is order for s in slices)
    assert slices[0].end_ns <= slices[1].start_ns and slices[1].end_ns <= slices[2].start_ns
    for s in slices:
        assert any(c.name == "venue.place_order" and parent(c) is s for c in trace)

    # executor -> aggregator: every slice's updates persisted from within the slice
    records = server("/nija.aggregator.v1.AggregatorService/RecordUpdate")
    assert {r.service for r in records} == {"aggregator"}
    assert all(any(parent(parent(r)) is s for r in records) for s in slices)
    assert {s.service.split("-")[0] for s in trace} >= set(KINDS)

    # Durations are real: the slices are a TWAP interval (1 s) apart; nothing ends before it starts.
    assert all(s.end_ns >= s.start_ns for s in trace)
    assert (slices[2].start_ns - slices[0].start_ns) / 1e9 >= 1.5

    shown = mesh.nija("trace", SIGNAL)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"trace {root.trace_id}")
    for service in ("aggregator", "permission", "router", f"executor-{broker}"):
        assert service in lines[0]
    slice_lines = [line for line in lines if "executor.twap_slice" in line]
    order_line = next(line for line in lines if "executor.order" in line)
    assert len(slice_lines) == 3
    assert all(line.index("executor.twap_slice") > order_line.index("executor.order") for line in slice_lines)
    assert f"signal_id={SIGNAL}" in lines[2] and "status=filled" in lines[2]

    unknown = mesh.nija("trace", "no-such-signal")
    assert unknown.returncode == 1 and "no spans" in unknown.stderr
