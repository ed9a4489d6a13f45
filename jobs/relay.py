"""Forwarding: an upstream job's stream re-emitted into the current job, one hop at a time.

    result = await submit_and_forward(client, operation, into=job, hop="hive:gpu1")

Every narration and output event keeps its actor, action and message; its `origin` gains
the hop in front (`hive:gpu1`, `hive:gpu1/worker:w-9001`) and its `job_id` becomes the
current job's, so a reader of the current job sees one job; the job it was narrated in on
its own hop stays next to it as `hop_job` (kept as it is when a hop further up already
set it), so a trace (jobs.trace_spans) tells the hops' jobs apart. Tokens stay tokens. The
upstream's own `state` events are not copied (the current job has its own); its final
state decides how `forward` ends.

Relayed events go straight into the current job's log, not through narration's sinks:
they were narrated, redacted and printed where they happened, and re-printing every
hive and worker line in the queen's log would double them and cost the hop its speed.
The events stay encoded from the wire to the log; only their `job_id`, `hop_job` and
`origin` are rewritten in place (see `_rehome`).
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import anyio

from jobs import DaemonUnreachable, JobError, LogEntry, UpstreamFailed, UpstreamUnreachable

if TYPE_CHECKING:
    from pydantic import BaseModel

    from jobs.client import JobClient
    from jobs.server import Job

CANCEL_UPSTREAM_WAIT_S = 5.0  # how long a cancelled hop waits for the upstream to confirm


async def submit_and_forward(
    client: JobClient, operation: BaseModel | dict[str, Any], *, into: Job, hop: str
) -> Any:
    """Submit `operation` upstream, mark `into` ready, then `forward` it; returns its result.

    A refused submit fails the job naming the hop: UpstreamUnreachable (so a waiting
    `POST /v1/jobs` answers 502) or UpstreamFailed with the upstream's reason.
    """
    name = _name(hop)
    try:
        job_id = await client.submit(operation)
    except DaemonUnreachable as exc:
        raise UpstreamUnreachable(name, client.base_url, reason=exc.reason) from exc
    except JobError as exc:
        raise UpstreamFailed(name, None, f"refused the job: {exc}") from exc
    into.mark_ready()
    return await forward(client, job_id, into=into, hop=hop)


async def forward(client: JobClient, job_id: str, *, into: Job, hop: str) -> Any:
    """Re-emit upstream job `job_id` (on `client`'s server) into `into` until it ends.

    Args:
        client: reaches the upstream server; the caller owns and closes it.
        job_id: the upstream job, already submitted.
        into: the current job (the one running this handler).
        hop: where the upstream sits, as `kind:name` (`hive:gpu1`); prefixed to origins
            and named in errors (`hive gpu1`).

    Returns the upstream job's result. Raises UpstreamUnreachable when the upstream
    cannot be reached or its stream vanishes, UpstreamFailed when its job failed or was
    cancelled there. Cancelling the caller cancels the upstream job (shielded, bounded).
    """
    name = _name(hop)
    final: dict[str, Any] | None = None
    try:
        async for batch in client.stream_entries(job_id):
            events = [entry for entry in batch if entry.kind != "state"]
            if len(events) != len(batch):
                final = _final_state(batch) or final
            if events:
                into.log.extend(_rehome(events, job_id, into.id, hop))
    except anyio.get_cancelled_exc_class():
        # Already ended or gone upstream (a JobError): there is nothing left to cancel.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(CANCEL_UPSTREAM_WAIT_S),
            contextlib.suppress(JobError),
        ):
            await client.cancel(job_id)
        raise
    except DaemonUnreachable as exc:
        raise UpstreamUnreachable(name, client.base_url, reason=exc.reason) from exc
    except JobError as exc:
        raise UpstreamFailed(name, job_id, f"could not be followed: {exc}") from exc
    if final is None:
        raise UpstreamFailed(name, job_id, "ended without saying how")
    state = final.get("state")
    if state == "failed":
        raise UpstreamFailed(name, job_id, f"failed: {final.get('error') or 'no reason given'}")
    if state == "cancelled":
        raise UpstreamFailed(name, job_id, "was cancelled there")
    return final.get("result")


def _name(hop: str) -> str:
    """`hive:gpu1` as people say it in a sentence: `hive gpu1`."""
    return hop.replace(":", " ", 1)


def _final_state(batch: list[LogEntry]) -> dict[str, Any] | None:
    for entry in reversed(batch):
        if entry.kind == "state":
            data = json.loads(entry.data_json)
            if data.get("state") in ("completed", "failed", "cancelled"):
                return dict(data)
    return None


def _rehome(entries: list[LogEntry], old_job: str, new_job: str, hop: str) -> list[LogEntry]:
    """Give narration and output events the current job's id, their own hop's job as
    `hop_job` (unless they already name one) and the hop in their origin.

    The fast path edits the JSON text: without a `fields` object every value is a
    scalar, and a `,"key":` with an unescaped quote can only be a key (a quote inside a
    string is always `\\"`), so `find` lands on the top-level keys. Anything else is
    decoded and re-encoded.
    """
    old_key = ',"job_id":' + json.dumps(old_job)
    new_key = ',"job_id":' + json.dumps(new_job)
    kept_key = new_key + ',"hop_job":' + json.dumps(old_job)
    hop_text = json.dumps(hop)[1:-1]
    bare_origin = ',"origin":"' + hop_text + '"}'
    for entry in entries:
        kind = entry.kind
        if kind != "narration" and kind != "output":
            continue  # tokens (and future kinds) pass unchanged
        text = entry.data_json
        if '"hop_job":' in text:  # relayed before: it names its own hop's job already
            moved = text.replace(old_key, new_key, 1)  # the same object when no match
        else:
            moved = text.replace(old_key, kept_key, 1)
        if moved is not text and '"fields":' not in moved and moved[-1] == "}":
            at = moved.find(',"origin":')
            if at < 0:
                entry.data_json = moved[:-1] + bare_origin
                continue
            if moved[at + 10] == '"':
                entry.data_json = moved[: at + 11] + hop_text + "/" + moved[at + 11 :]
                continue
        entry.data_json = _rehome_slow(text, old_job, new_job, hop)
    return entries


def _rehome_slow(text: str, old_job: str, new_job: str, hop: str) -> str:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):  # not an event at all: keep it, as output, visibly
        data = {"actor": "relay", "action": "output", "human": text, "stream": "stdout"}
    if not data.get("hop_job"):
        data["hop_job"] = data.get("job_id") or old_job
    data["job_id"] = new_job
    origin = data.get("origin")
    data["origin"] = f"{hop}/{origin}" if origin else hop
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
