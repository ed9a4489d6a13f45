"""Dispatch: send a prompt to the worker admission gave it, and relay the worker's job.

Inference goes to the worker directly (the hive never sees it) and its job is relayed
with `jobs.relay.forward`: tokens stay `token` events; the worker's `inference_start` and
`inference_complete` narration arrive with origin `worker:<id>`. Cancelling the queen job
cancels the worker's job. A worker that vanishes mid-stream (kill -9) fails the job
naming it within a bounded time (RECONNECTS short reconnects), and is marked gone so no
later request is routed to it, even before its hive's next beat drops it. A worker that
cannot take the prompt yet (503: still loading; or no answer while it is still starting)
raises WorkerBusy, and the request goes back to the head of its queue. A worker whose
job failed and whose /health then says `failed` (or nothing) is marked gone too: a split
worker that lost an RPC peer fails its jobs naming the peer, then exits, and the next
request must not be sent to it in the beat before its hive reports it gone.
"""

from __future__ import annotations

from typing import Any

from jobs import (
    DaemonUnreachable,
    Infer,
    InvalidRequest,
    JobError,
    UpstreamFailed,
    UpstreamUnreachable,
)
from jobs.client import JobClient
from jobs.relay import forward
from jobs.server import Job
from narration_core import Narrator
from queen._workers import Pick, WorkerView

NARRATE = Narrator("queen-rbee")
INFERENCE_PATH = "/v1/inference"  # the worker's route (docs/api.md)
NOT_FOR_WORKER = {"operation", "model", "hive_id", "worker_id"}  # the worker refuses these
RECONNECTS = 3  # a dropped worker stream is retried 0.1 + 0.2 + 0.4 s, then the job fails


class WorkerBusy(Exception):
    """The worker cannot take the prompt yet (`why`); the request waits for another turn."""

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(why)


def worker_body(op: Infer) -> dict[str, Any]:
    """The worker's `POST /v1/inference` body for `op`: every field of the request but
    those that chose the worker (which the worker refuses). Fields left at their default
    stay out, so a worker reads exactly what the caller asked for."""
    return op.model_dump(
        mode="json", exclude=NOT_FOR_WORKER, exclude_defaults=True, exclude_none=True
    )


async def send(view: WorkerView, pick: Pick, op: Infer, job: Job) -> dict[str, Any]:
    """Send `op` to `pick`'s worker and relay its job into `job`; returns the worker job's
    result with `worker_id` and `hive_id`. Raises WorkerBusy when it cannot take it yet,
    UpstreamUnreachable when it is gone, InvalidRequest when it refused the prompt."""
    worker = pick.worker
    name = f"worker {worker.worker_id}"
    token = view.hives.worker_token(pick.hive_id, worker.worker_id)  # that worker's alone
    async with JobClient(worker.url, token=token, max_reconnects=RECONNECTS) as client:
        try:
            reply: dict[str, Any] = await client.post(INFERENCE_PATH, worker_body(op))
        except DaemonUnreachable as exc:
            if view.still_starting(worker):  # its server is not up yet
                raise WorkerBusy("it is still starting") from exc
            view.gone(worker)
            raise UpstreamUnreachable(name, worker.url, reason=exc.reason) from exc
        except JobError as exc:
            if getattr(exc, "status", None) == 503:
                raise WorkerBusy(str(exc)) from exc
            raise InvalidRequest(f"{name} refused the prompt: {exc}") from exc
        job.mark_ready()
        NARRATE.action("infer").target(worker.worker_id).human(
            f"Prompt for {op.model} sent to worker {worker.worker_id} on hive "
            f"{pick.hive_id} ({worker.url})"
        ).emit()
        try:
            result = await forward(
                client, str(reply["job_id"]), into=job, hop=f"worker:{worker.worker_id}"
            )
        except DaemonUnreachable:
            view.gone(worker)
            raise
        except UpstreamFailed:
            if not await _healthy(client):
                view.gone(worker)
            raise
    return {**(result or {}), "worker_id": worker.worker_id, "hive_id": pick.hive_id}


async def _healthy(client: JobClient) -> bool:
    """Whether the worker behind `client` still answers /health with a usable status."""
    try:
        health = await client.health()
    except JobError:
        return False
    return health.get("status") in ("ready", "loading")
