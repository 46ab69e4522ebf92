"""The tracing switch (standard OTEL_* variables), the local JSON-lines store and `nija trace`'s tree."""

from __future__ import annotations

import json

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from services import trace_view
from services.runtime import tracing


@pytest.fixture(autouse=True)
def _no_provider_left_behind():
    yield
    tracing.uninstall()


def test_traces_are_off_unless_the_environment_asks(tmp_path):
    assert not tracing.configure("router", {})
    assert not tracing.enabled() and tracing.server_interceptors() == () and tracing.client_interceptors() == []
    with tracing.span("nothing", signal_id="s") as current:
        assert current is None


@pytest.mark.parametrize(
    ("env", "kinds"),
    [
        ({"OTEL_TRACES_EXPORTER": "otlp"}, [OTLPSpanExporter]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, [OTLPSpanExporter]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, [OTLPSpanExporter, ConsoleSpanExporter]),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "none", "NIJA_TRACE_DIR": "DIR"}, [tracing.JsonLinesExporter]),
    ],
)
def test_exporters_come_from_the_standard_variables(tmp_path, env, kinds):
    env = {k: v.replace("DIR", str(tmp_path)) for k, v in env.items()}
    assert [type(e) for e in tracing.exporters_from_env("router", env)] == kinds


def test_sdk_disabled_wins(tmp_path):
    assert not tracing.configure("router", {"OTEL_SDK_DISABLED": "true", "NIJA_TRACE_DIR": str(tmp_path)})
    assert not tracing.enabled()


def _provider(tmp_path, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(tracing.JsonLinesExporter(tmp_path / f"{service}-1.jsonl")))
    return provider


def test_spans_written_to_the_store_come_back_as_one_tree(tmp_path):
    tracing.install(_provider(tmp_path, "executor-kraken"))
    with tracing.span("executor.order", signal_id="sig-1", user_id="alice", broker="kraken", method="twap"):
        parent = tracing.capture()
        for leg in range(2):
            with tracing.span("executor.twap_slice", leg=leg):
                tracing.annotate(status="executing")
        tracing.record_span("executor.queue_wait", tracing.now_ns() - 5_000_000, parent)
    with tracing.span("unrelated", signal_id="sig-2"):
        pass
    tracing.uninstall()  # flushes and closes the file

    spans = trace_view.load_spans(tmp_path)
    assert len(spans) == 5
    (trace,) = trace_view.traces_for(spans, "sig-1")
    (root,) = trace_view.build_tree(trace)
    assert root.name == "executor.order" and root.service == "executor-kraken"
    assert root.attributes == {"nija.signal_id": "sig-1", "nija.user_id": "alice", "nija.broker": "kraken",
                               "nija.method": "twap"}
    assert [(c.name, c.attributes.get("nija.leg")) for c in root.children] == [
        ("executor.queue_wait", None), ("executor.twap_slice", 0), ("executor.twap_slice", 1)]
    assert root.children[0].duration_ms >= 5.0

    text = trace_view.render(trace)
    assert text.splitlines()[0].startswith(f"trace {root.trace_id}  ")
    assert "4 spans, services: executor-kraken" in text.splitlines()[0]
    slice_lines = [line for line in text.splitlines() if "executor.twap_slice" in line]
    assert len(slice_lines) == 2 and "leg=1 status=executing" in slice_lines[1]
    # Children are indented under their parent.
    assert slice_lines[0].index("executor.twap_slice") > text.splitlines()[2].index("executor.order")
    # A trace id works as well as a signal id.
    assert trace_view.traces_for(spans, root.trace_id) == [trace]


def test_a_torn_line_and_a_missing_parent_do_not_break_the_view(tmp_path):
    good = {"trace_id": "a" * 32, "span_id": "1" * 16, "parent_id": "2" * 16, "name": "x", "service": "router",
            "kind": "server", "start_ns": 1_000_000, "end_ns": 3_000_000, "status": "unset",
            "attributes": {"nija.signal_id": "s"}}
    (tmp_path / "router-1.jsonl").write_text(json.dumps(good) + "\n" + '{"trace_id": "a', encoding="utf-8")
    spans = trace_view.load_spans(tmp_path)
    (trace,) = trace_view.traces_for(spans, "s")
    assert [r.name for r in trace_view.build_tree(trace)] == ["x"]  # parent not in the store: a root
    assert "2.0ms" in trace_view.render(trace)


def test_attributes_are_only_the_named_ones():
    with pytest.raises(KeyError):
        tracing._attributes({"api_secret": "x"})
