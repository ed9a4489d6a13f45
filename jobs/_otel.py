"""OpenTelemetry export of a job's spans, optional: `pip install rbee[otel]` and set
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).

Each daemon (queen, hive, worker) exports, once a job ends, the spans of that job it
derived from its own log (`jobs.trace_spans`): the job itself, and its phases, under the
request's trace id. A job's span id is its own id's hex (`job-<16 hex>`), the same one
its `traceparent` gave the next hop, so the hops' spans nest in a user's Jaeger, Tempo
or Honeycomb as the jobs did. The OTLP exporter is the official one; its endpoint,
headers and timeout come from the standard OTEL_* variables.

Narration goes along as OTLP log records under the job's span (each hop its own).

Without the variable nothing of OpenTelemetry is imported (`otel_enabled()` only reads the
environment; a test checks `sys.modules`); without the extra installed, nothing is
exported, and the first job says why once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from typing import Any

from jobs._trace import job_span_id, new_span_id

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
LOG = logging.getLogger(__name__)

_exporters: dict[str, Any] = {}
_lock = threading.Lock()
_missing_said = False


def otel_enabled() -> bool:
    """True when an OTLP endpoint is configured: the daemon then exports its jobs' spans."""
    return any(os.environ.get(name) for name in ENDPOINT_ENVS)


def otel_export(
    service_name: str, trace: dict[str, Any], events: list[dict[str, Any]] | None = None
) -> bool:
    """Export the spans of `trace` (a `trace_spans` answer) that its own job's log gave
    (those relayed from another hop are that hop's to export), as `service_name`, and
    the job's own narration `events` as log records under the job's span. Blocking (HTTP
    POSTs): call it in a thread. False when nothing could be sent."""
    exporters = _exporters_for()
    if exporters is None or not trace.get("trace_id"):
        return False
    spans = _readable_spans(service_name, trace)
    if not spans:
        return False
    from opentelemetry.sdk.trace.export import SpanExportResult

    sent = exporters[0].export(spans) == SpanExportResult.SUCCESS
    records = _log_records(service_name, trace, events or [])
    if records:
        exporters[1].export(records)
    return bool(sent)


def _exporters_for() -> tuple[Any, Any] | None:
    """The process's (span, log) exporters, made on first use; None without the extra."""
    global _missing_said
    with _lock:
        if "otlp" in _exporters:
            return _exporters["otlp"]  # type: ignore[no-any-return]
        if importlib.util.find_spec("opentelemetry") is None or not _has_exporter():
            if not _missing_said:
                _missing_said = True
                LOG.warning(
                    "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry extra is not "
                    "installed; install it with `pip install 'rbee[otel]'` to export traces"
                )
            _exporters["otlp"] = None
            return None
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _exporters["otlp"] = (OTLPSpanExporter(), OTLPLogExporter())
        return _exporters["otlp"]  # type: ignore[no-any-return]


def _has_exporter() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:
        return False


def _readable_spans(service_name: str, trace: dict[str, Any]) -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    own_job = str(trace["job_id"])
    trace_id = int(str(trace["trace_id"]), 16)
    root_span = int(job_span_id(own_job) or new_span_id(), 16)
    parent_hex = job_span_id(trace.get("parent_job"))
    resource = Resource.create({"service.name": service_name})
    scope = InstrumentationScope("rbee")
    flags = TraceFlags(TraceFlags.SAMPLED)

    def context(span_id: int) -> SpanContext:
        return SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags)

    parent_of_root = (
        None
        if parent_hex is None
        else SpanContext(trace_id, int(parent_hex, 16), is_remote=True, trace_flags=flags)
    )
    spans = []
    for span in trace["spans"]:
        if span["job_id"] != own_job:
            continue
        is_root = span["kind"] == "job"
        start_ns = int(float(span["start"]) * 1e9)
        end_ns = start_ns + int(float(span["duration_s"]) * 1e9)
        spans.append(
            ReadableSpan(
                name=str(span["name"]),
                context=context(root_span if is_root else int(new_span_id(), 16)),
                parent=parent_of_root if is_root else context(root_span),
                resource=resource,
                attributes={
                    "rbee.job_id": own_job,
                    "rbee.hop": str(span["hop"]),
                    "rbee.host": str(span["host"]),
                    "rbee.kind": str(span["kind"]),
                },
                kind=SpanKind.SERVER if is_root else SpanKind.INTERNAL,
                start_time=start_ns,
                end_time=end_ns,
                instrumentation_scope=scope,
            )
        )
    return spans


_SEVERITY = {"debug": 5, "info": 9, "warn": 13, "error": 17}  # OTel SeverityNumber values


def _log_records(
    service_name: str, trace: dict[str, Any], events: list[dict[str, Any]]
) -> list[Any]:
    """The job's own narration (not what it relayed: each hop exports its own) as OTLP
    log records, under the job's span: `[actor] action: human` with its fields."""
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    span_hex = job_span_id(str(trace["job_id"]))
    if span_hex is None:
        return []
    span = SpanContext(
        int(str(trace["trace_id"]), 16),
        int(span_hex, 16),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    context = set_span_in_context(NonRecordingSpan(span))
    resource = Resource.create({"service.name": service_name})
    scope = InstrumentationScope("rbee.narration")
    records = []
    for event in events:
        if event.get("event") not in ("narration", "output") or event.get("hop_job"):
            continue
        level = str(event.get("level") or "info")
        attributes = {
            "rbee.actor": str(event.get("actor")),
            "rbee.action": str(event.get("action")),
            "rbee.job_id": str(trace["job_id"]),
        }
        for key in ("target", "origin", "stream"):
            if event.get(key) is not None:
                attributes[f"rbee.{key}"] = str(event[key])
        record = LogRecord(
            timestamp=int(float(event.get("ts") or 0.0) * 1e9),
            context=context,
            severity_text=level.upper(),
            severity_number=SeverityNumber(_SEVERITY.get(level, 9)),
            body=str(event.get("human") or ""),
            attributes=attributes,
            event_name=f"rbee.{event.get('action')}",
        )
        records.append(ReadableLogRecord(record, resource, scope))
    return records
