"""Distributed traces: one signal is one trace, router -> permission -> executor -> aggregator.

Off unless asked for. `configure(service)` (called by `nija serve`) installs a tracer provider when
the environment asks for traces, by the standard OpenTelemetry variables only:

  OTEL_TRACES_EXPORTER=otlp (or an OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT)  OTLP/gRPC to a collector,
                                          configured by the other OTEL_EXPORTER_OTLP_* variables
  OTEL_TRACES_EXPORTER=console            spans printed on stdout
  OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, OTEL_SDK_DISABLED

and, for people without a collector, `NIJA_TRACE_DIR`: every span is also appended, as one JSON
object per line, to `<dir>/<service>-<pid>.jsonl`, which `nija trace <signal_id>` reads.

Once installed, every gRPC server gets the OpenTelemetry aio server interceptor (health and
reflection excluded) and every channel the client interceptors, so the W3C `traceparent` crosses
every hop, streams included. The services add their own spans (queue wait, rate-limit wait,
venue calls, TWAP slices) through `span()` / `record_span()`, with attributes from `ATTRIBUTES`
only: ids, broker, pair, status; never a token, key or secret.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

log = logging.getLogger(__name__)

TRACE_DIR_ENV = "NIJA_TRACE_DIR"

#: The attributes the services put on spans (always under these names, never anything secret).
ATTRIBUTES = {
    "signal_id": "nija.signal_id",
    "user_id": "nija.user_id",
    "broker": "nija.broker",
    "pair": "nija.pair",
    "status": "nija.status",
    "method": "nija.method",
    "leg": "nija.leg",
    "operation": "nija.operation",
    "attempt": "nija.attempt",
    "reason": "nija.reason",
}

# Probes and tooling would drown the traces that matter.
_NOT_TRACED = filters.negate(
    filters.any_of(filters.service_name("grpc.health.v1.Health"),
                   filters.service_prefix("grpc.reflection."))
)

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


def install(provider: TracerProvider) -> None:
    """Use `provider` for every server, channel and span made from now on (tests install one
    with an in-memory exporter)."""
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer("nija")


def uninstall() -> None:
    """Flush and drop the provider (a service stopping, or a test done)."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = None
    _tracer = None


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install a provider if the environment asks for traces. True if it did."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = exporters_from_env(service, env)
    if not exporters:
        return False
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    log.info("tracing on", extra={"exporters": [type(e).__name__ for e in exporters]})
    return True


def exporters_from_env(service: str, env: Mapping[str, str]) -> list[SpanExporter]:
    names = {n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()}
    if not names and (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = {"otlp"}
    exporters: list[SpanExporter] = []
    unknown = names - {"otlp", "console", "none"}
    if unknown:
        log.warning("unknown OTEL_TRACES_EXPORTER ignored", extra={"exporters": sorted(unknown)})
    if "otlp" in names:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if "console" in names:
        exporters.append(ConsoleSpanExporter())
    if env.get(TRACE_DIR_ENV):
        exporters.append(JsonLinesExporter(pathlib.Path(env[TRACE_DIR_ENV]) / f"{service}-{os.getpid()}.jsonl"))
    return exporters


# ---- gRPC ----------------------------------------------------------------------------------------


def server_interceptors(only_continued: bool = False) -> tuple[grpc.aio.ServerInterceptor, ...]:
    """`only_continued`: spans only for calls that arrive inside a trace (a `traceparent`)."""
    if _provider is None:
        return ()
    chosen = filters.all_of(_NOT_TRACED, _continues_a_trace) if only_continued else _NOT_TRACED
    return (aio_server_interceptor(tracer_provider=_provider, filter_=chosen),)


def _continues_a_trace(details: grpc.HandlerCallDetails) -> bool:
    return any(key == "traceparent" for key, _ in details.invocation_metadata or ())


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    if _provider is None:
        return []
    return list(aio_client_interceptors(tracer_provider=_provider, filter_=_NOT_TRACED))


# ---- spans ---------------------------------------------------------------------------------------


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or value == "":
            continue
        out[ATTRIBUTES[key]] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


@contextlib.contextmanager
def span(name: str, parent: otel_context.Context | None = None, **attrs: Any) -> Iterator[trace.Span | None]:
    """A span around a block, the current span inside it; a no-op when tracing is off.
    `parent`: a context captured elsewhere (work handed from a request to a worker task)."""
    if _tracer is None or not is_instrumentation_enabled():
        yield None
        return
    with _tracer.start_as_current_span(name, context=parent, attributes=_attributes(attrs)) as current:
        yield current


def record_span(name: str, start_ns: int, parent: otel_context.Context | None = None, **attrs: Any) -> None:
    """A span that already happened, from `start_ns` (time.time_ns()) to now: a wait measured
    by its two ends (queue wait, rate-limit deferral)."""
    if _tracer is None or not is_instrumentation_enabled():
        return
    done = _tracer.start_span(name, context=parent, attributes=_attributes(attrs), start_time=start_ns)
    done.end()


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """No spans inside, ours or gRPC's: for background chores (book refreshes every few hundred
    milliseconds) that would bury the traces of signals."""
    with suppress_instrumentation():
        yield


def annotate(**attrs: Any) -> None:
    """Attributes on the current span (e.g. the RPC's server span)."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(_attributes(attrs))


def capture() -> otel_context.Context | None:
    """The current context, to continue the trace in another task (None when tracing is off)."""
    return otel_context.get_current() if _tracer is not None else None


def now_ns() -> int:
    return time.time_ns()


# ---- the local store -----------------------------------------------------------------------------


class JsonLinesExporter(SpanExporter):
    """Appends each span as one JSON line: what `nija trace` reads when there is no collector."""

    def __init__(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by shutdown()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(s), separators=(",", ":")) + "\n" for s in spans)
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_record(span_: ReadableSpan) -> dict[str, Any]:
    ctx = span_.get_span_context()
    assert ctx is not None
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(span_.parent.span_id, "016x") if span_.parent is not None else "",
        "name": span_.name,
        "service": str(span_.resource.attributes.get(SERVICE_NAME, "")),
        "kind": span_.kind.name.lower(),
        "start_ns": span_.start_time,
        "end_ns": span_.end_time,
        "status": span_.status.status_code.name.lower(),
        "attributes": {k: v if isinstance(v, (bool, int, float, str)) else list(v) for k, v in (span_.attributes or {}).items()},
    }


def annotate_message(message: Any) -> None:
    """The ids of a request or streamed response on the current span: a `signal`
    (TradeSignal), an `update` (ExecutionUpdate, with its status), or plain id fields."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    if not current.is_recording():
        return
    fields = message.DESCRIPTOR.fields_by_name
    for holder in ("signal", "update"):
        if holder in fields and message.HasField(holder):
            message = getattr(message, holder)
            fields = message.DESCRIPTOR.fields_by_name
            break
    attrs: dict[str, Any] = {}
    for name in ("signal_id", "user_id", "broker", "pair"):
        if name in fields:
            attrs[name] = getattr(message, name)
    enum = fields["status"].enum_type if "status" in fields else None
    if enum is not None:  # EXECUTION_STATUS_FILLED -> "filled", as the services name states
        value = enum.values_by_number.get(message.status)
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
        attrs["status"] = value.name.removeprefix(prefix).lower() if value is not None else str(message.status)
    current.set_attributes(_attributes(attrs))
