"""Operation -> handler for the queen: its own status and hive list, `infer` routed to a
worker (queen.infer), and the hive operations forwarded to the hive they name
(queen.forward). `hive_start` and `hive_stop` are the keeper's (it starts and stops hives
itself, locally or over SSH), so here they fail their job with OperationUnavailable."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio

from jobs import HiveList, QueenStatus
from jobs.server import Handler, Job, JobService
from narration_core import Narrator
from queen.forward import forwarding_handlers
from queen.hives import HiveRegistry
from queen.infer import WorkerPool, infer_handler
from queen.settings import WATCH_IDLE_S

NARRATE = Narrator("queen-rbee")


def create_router(
    service: JobService,
    hives: HiveRegistry,
    *,
    version: str,
    workers: WorkerPool | None = None,
    watch_idle_s: float = WATCH_IDLE_S,
) -> Mapping[str, Handler]:
    """The handlers this queen serves, closed over the state they read (`workers`: who
    serves which model, shared with the OpenAI door).

    Calls to a hive carry that hive's own token (`hives.token_for`), never the queen's.

    A `queen_status` watch runs until cancelled, and a client that crashed never cancels
    it, so it ends itself once no stream has read it for `watch_idle_s`.
    """

    pool = workers or WorkerPool(hives)

    def hive_dicts(now: float) -> list[dict[str, Any]]:
        """The hives as `to_dict` gives them, with the workers as the pool knows them."""
        by_hive: dict[str, list[dict[str, Any]]] = {}
        for pick in pool.known():
            by_hive.setdefault(pick.hive_id, []).append(pick.worker.model_dump(mode="json"))
        return [{**h.to_dict(now), "workers": by_hive.get(h.id, [])} for h in hives.all()]

    async def snapshot() -> dict[str, Any]:
        now = time.time()
        known = hive_dicts(now)
        return {
            "version": version,
            "uptime_s": round(now - service.started_at, 3),
            "jobs": await service.registry.counts(),
            "hives": known,
            "workers": [{"hive_id": h["hive_id"], **w} for h in known for w in h["workers"]],
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
            if job.log.unread_for() > watch_idle_s:
                NARRATE.action("status").human(
                    f"Nobody has read this status watch for {watch_idle_s:g} s; ending it "
                    "(watch again to start a new one)"
                ).emit()
                return status

    async def hive_list(op: HiveList, job: Job) -> dict[str, Any]:
        known = hives.all()
        for hive in known:
            stale = " (stale: no heartbeat lately)" if hive.is_stale() else ""
            NARRATE.action("hive_list").target(hive.id).human(
                f"{hive.id} at {hive.url}{stale}"
            ).emit()
        return {"hives": hive_dicts(time.time())}

    return {
        "queen_status": queen_status,
        "hive_list": hive_list,
        "infer": infer_handler(pool),
        **forwarding_handlers(hives, pool),
    }
