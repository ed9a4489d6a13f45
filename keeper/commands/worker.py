"""`keeper worker spawn|list|stop`: worker jobs the queen hands to a hive and relays.

The keeper shows the worker's own narration (`startup`, `model_load`) live, with the
worker's actor, as the hive and queen relay it under the queen job.

A worker is stopped on the hive named (localhost by default); when that fails and the
queen's status shows the worker on another hive, the keeper says which, with the
`--hive` command that stops it there.
"""

from __future__ import annotations

from typing import Any

from jobs import worker_list_op, worker_spawn_op, worker_stop_op
from keeper.errors import DaemonUnreachable, JobFailed, KeeperError, UsageError
from keeper.session import open_client, stream_operation
from keeper.settings import KeeperSettings


def spawn(
    settings: KeeperSettings,
    *,
    model: str,
    hive: str,
    device: str,
    parallel: int | None = None,
    threads: int | None = None,
    ctx_size: int | None = None,
) -> None:
    """Start a worker for `model` on `hive`; returns once it is ready (or raises JobFailed)."""
    op = worker_spawn_op(
        hive_id=hive,
        model=model,
        device=device,
        parallel=parallel,
        threads=threads,
        ctx_size=ctx_size,
    )
    stream_operation(settings, op)


def list_workers(settings: KeeperSettings, *, hive: str) -> None:
    stream_operation(settings, worker_list_op(hive_id=hive))


def stop(settings: KeeperSettings, worker_id: str, *, hive: str) -> None:
    """Stop a worker on `hive`. When that fails (no such worker there, or that hive is
    down) and the queen knows the worker on other hives, say which: a UsageError."""
    try:
        stream_operation(settings, worker_stop_op(hive_id=hive, worker_id=worker_id))
    except (JobFailed, DaemonUnreachable) as failed:
        found = _hives_running(settings, worker_id)
        if not found or hive in found:
            raise
        where = found[0]
        raise UsageError(
            f"worker {worker_id!r} is not on hive {hive}: it runs on hive {where}; stop it "
            f"there with `keeper worker stop {worker_id} --hive {where}`"
        ) from failed


def _hives_running(settings: KeeperSettings, worker_id: str) -> list[str]:
    """The hives on which the queen's last heartbeats show `worker_id` (none if it cannot
    be asked). A look at the queen's status, not a job."""
    try:
        with open_client(settings) as client:
            status = client.status()
    except KeeperError:
        return []
    workers: list[Any] = status.get("workers") or []
    return [
        str(w["hive_id"])
        for w in workers
        if isinstance(w, dict) and w.get("worker_id") == worker_id and "hive_id" in w
    ]
