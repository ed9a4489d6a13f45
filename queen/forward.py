"""Hive operations: the queen job hands the operation to its hive and relays the hive's job.

    keeper -> queen job (worker_spawn) -> hive job (worker_spawn) -> worker's narration

The queen submits the same operation to the hive's `POST /v1/jobs` with that hive's own
token or credential (never the queen's token) and `forward`s the hive job's stream into
the queen job, so the keeper sees the hive's and the worker's narration live, under the
queen job's id, with their own actors and `origin` `hive:<id>[/worker:<id>]`. An
unreachable hive fails the job with `hive <id> unreachable at <url>: …`, and
`POST /v1/jobs` answers 502 (the handlers are `Upstream`: the POST waits until the hive
has accepted the job).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from jobs import AuthRequired, UpstreamFailed
from jobs.client import JobClient
from jobs.relay import submit_and_forward
from jobs.server import Handler, Job, Upstream
from narration_core import Narrator
from queen.errors import HiveRefusedToken
from queen.hives import HiveRegistry

if TYPE_CHECKING:
    from queen.infer import WorkerPool

NARRATE = Narrator("queen-rbee")

# Operations a hive runs; the queen only routes them by `hive_id`.
HIVE_OPERATIONS = (
    "hive_status",
    "worker_spawn",
    "worker_list",
    "worker_stop",
    "model_download",
    "model_list",
    "model_delete",
)


def forwarding_handlers(
    hives: HiveRegistry, workers: WorkerPool | None = None
) -> dict[str, Handler]:
    """A handler per hive operation, forwarding to the hive the operation names. Spawns
    and stops that succeed are told to `workers`, so `infer` sees them before the next
    beat does (a dashboard user spawns a worker, then prompts it at once)."""

    async def to_hive(op: Any, job: Job) -> Any:  # Any: every hive operation has hive_id
        hive = await hives.reachable(op.hive_id)
        NARRATE.action("forward").target(hive.id).human(
            f"Handing {op.operation} to hive {hive.id} at {hive.url}"
        ).emit()
        token = hives.token_for(hive.id)
        async with JobClient(hive.url, token=token) as client:
            try:
                result = await submit_and_forward(client, op, into=job, hop=f"hive:{hive.id}")
            except UpstreamFailed as exc:
                if isinstance(exc.__cause__, AuthRequired):  # the advice is about hives.toml
                    had_token = hives.has_configured_token(hive.id)
                    raise HiveRefusedToken(hive.id, hive.url, had_token=had_token) from exc
                raise
        hives.seen(hive.id)
        if workers is not None and op.operation == "worker_spawn" and isinstance(result, dict):
            with contextlib.suppress(ValidationError):  # not a worker's shape: beats will tell
                workers.note_spawned(hive.id, result)
        elif workers is not None and op.operation == "worker_stop":
            workers.note_stopped(op.worker_id)
        elif workers is not None and op.operation == "model_delete":
            workers.note_deleted(hive.id, op.model)  # its id is no longer that hive's
        elif workers is not None and op.operation == "model_list" and isinstance(result, dict):
            kept = served(workers)  # what `model_serve` keeps, when it keeps anything
            result = {**result, "served": kept} if kept else result
        return result

    handler = Upstream(to_hive)
    return dict.fromkeys(HIVE_OPERATIONS, handler)


def served(workers: WorkerPool) -> list[dict[str, Any]]:
    """The models the queen keeps running (`keeper model serve`), narrated one a line
    after a hive's catalog: every hive's workers count, so `keeper model list` shows them
    whichever hive it names."""
    table = workers.replicas.table()
    for row in table:
        live = row["live"]
        most = row["max_replicas"]
        upto = f" (up to {most})" if most > row["replicas"] else ""
        where = f" on hive {row['hive_id']}" if row["hive_id"] else ""
        NARRATE.action("model_served").target(row["model"]).human(
            f"Kept running: {row['model']}{where}, {row['replicas']} replica(s){upto}; "
            f"{len(live)} live: {', '.join(live) or 'none yet'}"
        ).emit()
    return table
