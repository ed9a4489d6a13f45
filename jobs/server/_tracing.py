"""Trace context on the server side: each request's trace, and a job's trace route.

`TraceContext` (pure ASGI, so it costs the token stream nothing) reads the request's
`traceparent`/`tracestate` (jobs._trace) or mints a new trace, and sets it in the
request's context: narration's trace id, and the job that called (`parent_job`). A job
the request creates records both (JobService.submit), narrates with the trace id, and
every call its handler makes carries it on (jobs.client sends `traceparent`).

`GET /v1/jobs/{id}/trace` serves `jobs.trace_spans` over the job's record and log: the
queen's log holds every hop's relayed narration, so the queen's answer is the request's
whole timeline (the keeper's `keeper jobs trace` and the dashboard both read it).
"""

from __future__ import annotations

import json
import logging
import socket
import weakref
from typing import Any, Protocol

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from jobs import incoming_trace, otel_export, set_parent_job, trace_spans
from jobs.server._logreaders import LogReader
from jobs.server._registry import JobRecord
from narration_core import narration_context

LOG = logging.getLogger(__name__)

TRACE_KINDS = ("narration", "output", "state")  # tokens say nothing about time

# The short name a server is in a timeline by, from its actor name.
HOP_NAMES = {"queen-rbee": "queen", "rbee-hive": "hive", "llm-worker-rbee": "worker"}


class Traced(Protocol):
    """What a trace is read from: the JobService (named here without importing it)."""

    actor: str

    async def get(self, job_id: str) -> JobRecord: ...
    async def reader(self, job_id: str, after: int) -> LogReader: ...


class TraceContext:
    """Put each HTTP request's trace (from `traceparent`, else a new one) in its context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        traceparent = tracestate = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"tracestate":
                tracestate = value.decode("latin-1")
        trace_id, parent_job = incoming_trace(traceparent, tracestate)
        set_parent_job(parent_job)  # the request's own context: no reset needed
        with narration_context(trace_id=trace_id):
            await self.app(scope, receive, send)


async def job_trace(service: Traced, job_id: str) -> dict[str, Any]:
    """The trace of job `job_id` from its record and what its log holds now (a running
    job's so far); raises JobNotFound."""
    return (await _trace_and_events(service, job_id))[0]


async def _trace_and_events(
    service: Traced, job_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    record = await service.get(job_id)
    body = record.to_dict()
    events: list[dict[str, Any]] = []
    reader = await service.reader(job_id, 0)
    try:
        while True:
            batch = await reader.take()
            if not batch:
                break
            for entry in batch:
                if entry.kind in TRACE_KINDS:
                    data = json.loads(entry.data_json)
                    if isinstance(data, dict):
                        events.append({"event": entry.kind, **data})
            if reader.at_end():
                break
    finally:
        reader.close()
    for event in reversed(events):
        if event["event"] == "state" and "result" in event:
            body["result"] = event["result"]
            break
    hop = HOP_NAMES.get(service.actor, service.actor)
    return trace_spans(body, events, hop=hop, host=socket.gethostname()), events


# One export thread per job service (made on its loop): a slow collector never holds more.
_EXPORTS: weakref.WeakKeyDictionary[Traced, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()
EXPORTS_WAITING_MAX = 64  # ended jobs waiting to be exported beyond which one is dropped


async def export_job(service: Traced, job_id: str) -> None:
    """Send an ended job's spans and narration to the OTLP endpoint (jobs.otel_export),
    off the loop, one export at a time: a collector that is down costs a warning and, past
    EXPORTS_WAITING_MAX waiting, that job's export; never the job, nor the threads the
    job server's own writes run on."""
    limiter = _EXPORTS.setdefault(service, anyio.CapacityLimiter(1))
    if limiter.statistics().tasks_waiting >= EXPORTS_WAITING_MAX:
        LOG.warning("dropping the spans of job %s: the OTLP collector is not keeping up", job_id)
        return
    try:
        trace, events = await _trace_and_events(service, job_id)
        await anyio.to_thread.run_sync(otel_export, service.actor, trace, events, limiter=limiter)
    except Exception as exc:
        LOG.warning("exporting the spans of job %s failed: %s", job_id, exc)
