"""One trace per user request: the W3C `traceparent` header, and a job's spans.

A trace id (32 hex digits) is minted where a request starts (the keeper's submit, the
queen's OpenAI door, the dashboard) and travels on every hop in W3C trace-context's
`traceparent` header, `00-<trace id>-<parent span>-01`. Inside a job the parent span is
that job's own id (`job-` + 16 hex digits is a span id as it stands), and
`tracestate: rbee=job` says so, so the receiving server records the calling job as the
new job's `parent_job`; an edge sends a fresh span and no `tracestate`. The one header is
read and written here by hand, so OpenTelemetry stays an optional extra (`jobs._otel`).

`trace_spans(record, events)` derives a job's timeline from what its log already holds,
with no bookkeeping of its own: the job's transitions, and the narration of every hop
(each relayed event keeps its `ts`, its `origin` and its own hop's job as `hop_job`).
One span for the job, one for each hop job relayed into it, and the phases the request
went through one after another (queued, model download, worker spawn, model load,
dispatch, prompt evaluation, first token, generation, relay), which cover the job's
whole time with no gap and no overlap: each phase lasts until the next one starts.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from typing import Any

from narration_core import current_job_id, current_trace_id

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
FROM_JOB = "rbee=job"  # tracestate of a call made inside a job: its span is that job

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_JOB_SPAN = re.compile(r"^job-([0-9a-f]{16})$")
_NO_TRACE = "0" * 32
_NO_SPAN = "0" * 16

# The job that called this server (from the request's headers), while it handles them.
_PARENT_JOB: ContextVar[str | None] = ContextVar("rbee_parent_job", default=None)


def new_trace_id() -> str:
    """A fresh trace id: 32 lowercase hex digits, never all zeros (W3C)."""
    while True:
        trace = os.urandom(16).hex()  # what secrets.token_hex does, without hmac
        if trace != _NO_TRACE:
            return trace


def new_span_id() -> str:
    """A fresh span id: 16 lowercase hex digits, never all zeros (W3C)."""
    while True:
        span = os.urandom(8).hex()
        if span != _NO_SPAN:
            return span


def format_traceparent(trace_id: str, span_id: str) -> str:
    """`00-<trace>-<span>-01`: version 00, sampled."""
    return f"00-{trace_id}-{span_id}-01"


def parse_traceparent(header: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a `traceparent` header, or None when it is absent or
    not version 00's exact shape (W3C: a receiver then starts a new trace)."""
    if not header:
        return None
    match = _TRACEPARENT.match(header.strip().lower())
    if match is None or match[1] == _NO_TRACE or match[2] == _NO_SPAN:
        return None
    return match[1], match[2]


def job_span_id(job_id: str | None) -> str | None:
    """The span id a job stands for (`job-<16 hex>` -> the hex), or None."""
    if job_id is None:
        return None
    match = _JOB_SPAN.match(job_id)
    return None if match is None else match[1]


def trace_headers(*, mint: bool = False) -> dict[str, str]:
    """The headers of a call made now: `traceparent` from the current trace (minted when
    there is none and `mint`), its span the current job's, with `tracestate: rbee=job`."""
    trace = current_trace_id()
    if trace is None:
        if not mint:
            return {}
        trace = new_trace_id()
    span = job_span_id(current_job_id())
    if span is None:
        return {TRACEPARENT: format_traceparent(trace, new_span_id())}
    return {TRACEPARENT: format_traceparent(trace, span), TRACESTATE: FROM_JOB}


def incoming_trace(traceparent: str | None, tracestate: str | None) -> tuple[str, str | None]:
    """(trace id, parent job) a request's headers carry; a new trace when they carry none."""
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return new_trace_id(), None
    states = {part.strip() for part in (tracestate or "").split(",")}
    return parsed[0], f"job-{parsed[1]}" if FROM_JOB in states else None


def current_parent_job() -> str | None:
    """The job that made the request being handled (see `incoming_trace`), if any."""
    return _PARENT_JOB.get()


def set_parent_job(job_id: str | None) -> None:
    """Set by the job server for each request (its context is the request's own)."""
    _PARENT_JOB.set(job_id)


# --- spans -------------------------------------------------------------------------

# Where a phase starts: (origin kind, action) of the event that opens it. "own" is the
# job's own server, "hive"/"worker" the hop an event came from.
_MARKERS: dict[tuple[str, str], str] = {
    ("own", "model_download"): "model download",
    ("hive", "model_download"): "model download",
    ("own", "worker_spawn"): "worker spawn",
    ("hive", "worker_spawn"): "worker spawn",
    ("worker", "model_load"): "model load",
    ("worker", "job_start"): "slot wait",
    ("hive", "worker_ready"): "dispatch",
    ("own", "worker_ready"): "dispatch",
    ("own", "infer"): "dispatch",
    ("own", "inference_start"): "prompt evaluation",
    ("worker", "inference_start"): "prompt evaluation",
    ("own", "inference_complete"): "finish",
    ("worker", "inference_complete"): "relay",
}
# Phases only move forward: a marker of an earlier (or the same) phase is narration of
# the step already running (the queen says "prompt sent" after the worker took it).
_ORDER = [
    "queued",
    "model download",
    "worker spawn",
    "model load",
    "dispatch",
    "slot wait",
    "prompt evaluation",
    "generation",
    "relay",
    "finish",
]
_OWN_PHASES = ("queued", "dispatch", "relay")  # steps of the server reading the log
_FINAL = ("completed", "failed", "cancelled")


def trace_spans(
    record: dict[str, Any], events: list[dict[str, Any]], *, hop: str = "queen", host: str = "local"
) -> dict[str, Any]:
    """The trace of one job: its record (`JobRecord.to_dict()`, with transitions, plus
    `result` when it has one) and its log's narration and state events (`{"event": kind,
    **data}`), read on the server `hop` runs on `host`, as `{"trace_id", "parent_job",
    "job_id", "state", "start", "end", "duration_s", "spans": [...]}`.

    Each span: `name`, `kind` (`job` for the job and each hop job, `phase` for a step of
    the request, `mark` for an instant such as the first token), `hop` (`queen`,
    `hive localhost`, `worker w-1`), `host`, `job_id` (the job whose narration it comes
    from), `start` (epoch seconds), `offset_s` (from the job's start) and `duration_s`.
    Phases are in order and cover the job's time exactly.
    """
    own = hop
    start = float(record.get("created_at") or 0.0)
    narr = sorted(
        (e for e in events if e.get("event") in ("narration", "output") and "ts" in e),
        key=lambda e: float(e["ts"]),
    )
    states = [e for e in events if e.get("event") == "state" and "ts" in e]
    end = _end(record, states, narr, start)
    hosts = _hosts(narr, record)
    hosts[own] = host
    root_job = str(record.get("job_id"))
    spans: list[dict[str, Any]] = [
        _span(str(record.get("operation") or "job"), "job", own, hosts, root_job, start, end)
    ]
    spans += _hop_jobs(narr, hosts)
    spans += _phases(record, narr, hosts, own, start, end)
    for span in spans:
        span["offset_s"] = round(span["start"] - start, 6)
    return {
        "trace_id": record.get("trace_id"),
        "parent_job": record.get("parent_job"),
        "job_id": root_job,
        "state": record.get("state"),
        "start": start,
        "end": end,
        "duration_s": round(end - start, 6),
        "spans": spans,
    }


def _end(
    record: dict[str, Any],
    states: list[dict[str, Any]],
    narr: list[dict[str, Any]],
    start: float,
) -> float:
    """When the job ended: its final state, else (still running) its latest event."""
    for state in reversed(states):
        if state.get("state") in _FINAL:
            return float(state["ts"])
    for step in reversed(record.get("transitions") or []):
        if step.get("state") in _FINAL:
            return float(step["at"])
    return max([start, *(float(e["ts"]) for e in narr)])


def _hop(origin: str | None, own: str) -> tuple[str, str]:
    """(origin kind, hop label) of an event: `hive:gpu1/worker:w-1` -> ("worker", "worker w-1")."""
    if not origin:
        return "own", own
    last = origin.rsplit("/", 1)[-1]
    kind, _, name = last.partition(":")
    if kind in ("hive", "worker") and name:
        return kind, f"{kind} {name}"
    return "own", own  # a captured process of this server (`pid 42`)


def _hosts(narr: list[dict[str, Any]], record: dict[str, Any]) -> dict[str, str]:
    """Each hop's host: a hive is its own (its id), a worker its hive's."""
    hosts: dict[str, str] = {}
    for event in narr:
        hive = None
        for part in str(event.get("origin") or "").split("/"):
            kind, _, name = part.partition(":")
            if kind == "hive" and name:
                hive = name
                hosts[f"hive {name}"] = name
            elif kind == "worker" and name and hive is not None:
                hosts[f"worker {name}"] = hive
    result = record.get("result")
    if isinstance(result, dict) and result.get("worker_id") and result.get("hive_id"):
        hosts.setdefault(f"worker {result['worker_id']}", str(result["hive_id"]))
    return hosts


def _span(
    name: str,
    kind: str,
    hop: str,
    hosts: dict[str, str],
    job_id: str,
    start: float,
    end: float,
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "hop": hop,
        "host": hosts.get(hop, "?"),
        "job_id": job_id,
        "start": start,
        "duration_s": round(max(end - start, 0.0), 6),
    }


def _hop_jobs(narr: list[dict[str, Any]], hosts: dict[str, str]) -> list[dict[str, Any]]:
    """A `job` span per hop job relayed into this one: its first to its last event."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for event in narr:
        hop_job = event.get("hop_job")
        if hop_job:
            seen.setdefault(str(hop_job), []).append(event)
    spans = []
    for hop_job, group in seen.items():
        first, last = group[0], group[-1]
        starts = [e for e in group if e.get("action") == "job_start"]
        name = str(starts[0].get("target") or "job") if starts else "job"
        _, hop = _hop(first.get("origin"), "?")
        spans.append(_span(name, "job", hop, hosts, hop_job, float(first["ts"]), float(last["ts"])))
    return spans


def _phases(
    record: dict[str, Any],
    narr: list[dict[str, Any]],
    hosts: dict[str, str],
    own: str,
    start: float,
    end: float,
) -> list[dict[str, Any]]:
    """The request's steps one after another, each until the next begins."""
    root_job = str(record.get("job_id"))
    opened: list[tuple[str, str, str, float]] = [("queued", own, root_job, start)]
    result = record.get("result") if isinstance(record.get("result"), dict) else None
    for event in narr:
        kind, hop = _hop(event.get("origin"), own)
        name = _MARKERS.get((kind, str(event.get("action"))))
        if name is None or _ORDER.index(name) <= _ORDER.index(opened[-1][0]):
            continue
        job = str(event.get("hop_job") or root_job)
        at = float(event["ts"])
        if name in _OWN_PHASES:  # the time this server spends between the hops
            hop, job = own, root_job
        if name == "prompt evaluation":
            slot = _slot_times(event, narr, result)
            if slot is not None:
                began, first = slot
                opened.append((name, hop, job, max(min(at, began), opened[-1][3])))
                opened.append(("first token", hop, job, first))
                opened.append(("generation", hop, job, first))
                continue
        opened.append((name, hop, job, at))
    phases = []
    ordered = sorted(opened, key=lambda p: p[3])
    for i, (name, hop, job, at) in enumerate(ordered):
        until = ordered[i + 1][3] if i + 1 < len(ordered) else end
        if name == "first token":
            until = at
        at, until = min(max(at, start), end), min(max(until, start), end)
        kind = "mark" if name == "first token" else "phase"
        phases.append(_span(name, kind, hop, hosts, job, at, until))
    return phases


def _slot_times(
    started: dict[str, Any], narr: list[dict[str, Any]], result: dict[str, Any] | None
) -> tuple[float, float] | None:
    """When the worker's slot began the prompt and when the first token came, from the
    job's result (`decode_time_ms` and `first_token_ms` run from the slot's start) and
    the `inference_complete` narrated as it ended; None when either is missing."""
    if result is None:
        return None
    decode, first = result.get("decode_time_ms"), result.get("first_token_ms")
    if not isinstance(decode, int | float) or not isinstance(first, int | float):
        return None
    for event in narr:
        same = event.get("hop_job") == started.get("hop_job")
        if same and event.get("action") == "inference_complete":
            began = float(event["ts"]) - float(decode) / 1000
            return began, began + float(first) / 1000
    return None
