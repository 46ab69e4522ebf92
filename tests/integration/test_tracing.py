"""Traces through the in-process mesh: one signal is one trace, every hop linked to its caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime import tracing
from services.runtime.wire import status_name
from tests.harness import InProcessMesh, signal, start_mesh


@pytest.fixture
async def traced(tmp_path: Path) -> AsyncIterator[tuple[InProcessMesh, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)  # before the servers and channels are made
    mesh = await start_mesh(tmp_path)
    try:
        yield mesh, exporter
    finally:
        await mesh.stop()
        tracing.uninstall()


SUBMIT = "/nija.router.v1.RouterService/SubmitSignal"


def _trace_of(exporter: InMemorySpanExporter, signal_id: str) -> list:
    """The trace of the signal's submission (the positions feed's later ApplyExecution calls
    are background work with traces of their own)."""
    spans = exporter.get_finished_spans()
    ids = {s.context.trace_id for s in spans if s.attributes.get("nija.signal_id") == signal_id and s.name == SUBMIT}
    assert len(ids) == 1, f"{signal_id} is in {len(ids)} traces: " + "; ".join(
        str(sorted({(s.name, s.parent is None) for s in spans if s.context.trace_id == t})) for t in ids)
    return [s for s in spans if s.context.trace_id in ids]


def _service(span) -> str:
    return str(span.attributes.get("rpc.service", ""))


async def test_a_twap_signal_is_one_trace_across_every_service(traced):
    mesh, exporter = traced
    updates = await mesh.submit(signal(usd="12000", signal_id="traced-twap"), timeout=60)
    assert status_name(updates[-1].status) == "filled"
    for _ in range(100):  # spans end just after their last message was sent
        names = [s.name for s in exporter.get_finished_spans()]
        if names.count(SUBMIT) == 2 and "executor.order" in names:
            break
        await asyncio.sleep(0.02)

    spans = _trace_of(exporter, "traced-twap")
    by_id = {s.context.span_id: s for s in spans}
    roots = [s for s in spans if s.parent is None]
    # The test's own channel is traced too: its client span is the root.
    assert [(r.name, r.kind.name) for r in roots] == [(SUBMIT, "CLIENT")]
    for s in spans:  # every other span's parent is in the same trace
        assert s.parent is None or s.parent.span_id in by_id, (s.name, s.kind, [(x.name, x.kind.name) for x in spans])

    def parent(s):
        return by_id[s.parent.span_id]

    servers = {_service(s) for s in spans if s.kind.name == "SERVER"}
    assert {"nija.router.v1.RouterService", "nija.permission.v1.PermissionService",
            "nija.executor.v1.ExecutorService", "nija.aggregator.v1.AggregatorService"} <= servers

    # router -> permission: the reservation is part of the routing decision
    reserve = next(s for s in spans if s.name == "/nija.permission.v1.PermissionService/ReserveTrade" and s.kind.name == "SERVER")
    assert parent(parent(reserve)).name == "router.decide"
    assert reserve.attributes["nija.signal_id"] == "traced-twap"

    # router -> executor -> its queue, its order, three slices, each with its venue call
    execute = next(s for s in spans if s.name == "/nija.executor.v1.ExecutorService/Execute" and s.kind.name == "SERVER")
    assert (parent(parent(execute)).name, parent(parent(execute)).kind.name) == (SUBMIT, "SERVER")
    assert execute.attributes["nija.status"] == "filled"
    order = next(s for s in spans if s.name == "executor.order")
    assert parent(order) is execute
    assert order.attributes["nija.status"] == "filled" and order.attributes["nija.method"] == "twap"
    assert parent(next(s for s in spans if s.name == "executor.queue_wait")) is execute
    slices = sorted((s for s in spans if s.name == "executor.twap_slice"), key=lambda s: s.attributes["nija.leg"])
    assert [s.attributes["nija.leg"] for s in slices] == [0, 1, 2]
    assert all(parent(s) is order for s in slices)
    assert slices[0].end_time <= slices[1].start_time <= slices[1].end_time <= slices[2].start_time
    for s in slices:
        venue = [c for c in spans if c.parent is not None and c.parent.span_id == s.context.span_id
                 and c.name.startswith("venue.")]
        assert "venue.place_order" in {c.name for c in venue}, [c.name for c in venue]

    # executor -> aggregator: each slice's EXECUTING update is persisted inside the slice's span
    records = [s for s in spans if s.name == "/nija.aggregator.v1.AggregatorService/RecordUpdate" and s.kind.name == "SERVER"]
    assert any(parent(parent(r)) is slices[1] for r in records)

    # The whole signal is one span tree rooted at the router, and no span carries a secret.
    for s in spans:
        for value in (s.attributes or {}).values():
            assert "nija_" not in str(value), (s.name, value)



def test_spans_reach_an_otlp_collector_configured_by_the_standard_variables(monkeypatch):
    """A collector on loopback (a real gRPC server speaking the OTLP trace service): the
    services' spans get there with nothing but OTEL_* variables set."""
    received: list[trace_service_pb2.ExportTraceServiceRequest] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
               "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert tracing.configure("executor-kraken")
        with tracing.span("executor.order", signal_id="otlp-1", broker="kraken"):
            with tracing.span("executor.twap_slice", leg=0):
                pass
        tracing.uninstall()  # flushes the batch
    finally:
        server.stop(None)

    spans = [(s.name, {a.key: a.value.string_value or a.value.int_value for a in s.attributes})
             for r in received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    resources = [{a.key: a.value.string_value for a in rs.resource.attributes} for r in received for rs in r.resource_spans]
    assert ("executor.order", {"nija.signal_id": "otlp-1", "nija.broker": "kraken"}) in spans
    assert ("executor.twap_slice", {"nija.leg": 0}) in spans
    assert resources[0]["service.name"] == "executor-kraken"
    assert resources[0]["deployment.environment"] == "test"
