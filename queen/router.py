"""Operation -> handler for the queen. Operations not listed fail their job with
OperationUnavailable until their issue lands (hive lifecycle, workers, models, infer)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio

from jobs.client import JobClient
from jobs.operations import HiveList, HiveStatus, QueenStatus
from jobs.service import Handler, Job, JobService, Upstream
from narration_core import Narrator
from queen.hives import HiveRegistry

NARRATE = Narrator("queen-rbee")


def create_router(
    service: JobService, hives: HiveRegistry, *, version: str
) -> Mapping[str, Handler]:
    """The handlers this queen serves, closed over the state they read.

    Calls to a hive carry that hive's own token (`hives.token_for`), never the queen's.
    """

    async def snapshot() -> dict[str, Any]:
        return {
            "version": version,
            "uptime_s": round(time.time() - service.started_at, 3),
            "jobs": await service.registry.counts(),
            "hives": [h.to_dict() for h in hives.all()],
        }

    async def queen_status(op: QueenStatus, job: Job) -> dict[str, Any]:
        while True:
            status = await snapshot()
            counts = ", ".join(f"{n} {s}" for s, n in sorted(status["jobs"].items())) or "no jobs"
            NARRATE.action("status").human(
                f"Queen {version} up {status['uptime_s']:.0f}s; jobs: {counts}; "
                f"{len(status['hives'])} hive(s) known"
            ).field("status", status).emit()
            if not op.watch:
                return status
            await anyio.sleep(op.interval_s)

    async def hive_list(op: HiveList, job: Job) -> dict[str, Any]:
        known = hives.all()
        for hive in known:
            NARRATE.action("hive_list").target(hive.id).human(f"{hive.id} at {hive.url}").emit()
        return {"hives": [h.to_dict() for h in known]}

    async def hive_status(op: HiveStatus, job: Job) -> dict[str, Any]:
        hive = hives.get(op.hive_id)
        NARRATE.action("hive_status").target(hive.id).human(
            f"Asking hive {hive.id} at {hive.url} for its health"
        ).emit()
        async with JobClient(hive.url, token=hives.token_for(hive.id)) as client:
            health = await client.health()  # DaemonUnreachable -> the job fails, POST gets 502
        job.mark_ready()
        hives.seen(hive.id)
        NARRATE.action("hive_status").target(hive.id).human(
            f"Hive {hive.id} is up (version {health.get('version', '?')})"
        ).emit()
        return {"hive_id": hive.id, "url": hive.url, "health": health}

    return {
        "queen_status": queen_status,
        "hive_list": hive_list,
        "hive_status": Upstream(hive_status),
    }
