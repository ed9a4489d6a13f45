"""Operation -> handler for the queen: its own status and hive list, `infer` routed to a
worker (queen.infer), the hive operations forwarded to the hive they name
(queen.forward), and `hive_start` / `hive_stop` for the hives of its configuration
(queen.hive_control, through the lifecycle library the keeper uses). The status is also a
plain GET (queen.status); the `queen_status` job stays for `keeper status --watch` and
older clients."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio

from jobs import HiveList, ModelServe, QueenStatus
from jobs.server import Handler, Job, JobService
from narration_core import Narrator
from queen.forward import forwarding_handlers
from queen.hive_control import hive_control_handlers
from queen.hives import HiveRegistry
from queen.infer import WorkerPool, infer_handler
from queen.settings import WATCH_IDLE_S
from queen.status import StatusView

NARRATE = Narrator("queen-rbee")


def create_router(
    service: JobService,
    hives: HiveRegistry,
    *,
    version: str,
    workers: WorkerPool | None = None,
    watch_idle_s: float = WATCH_IDLE_S,
    queen_url: str | None = None,
) -> Mapping[str, Handler]:
    """The handlers this queen serves, closed over the state they read (`workers`: who
    serves which model, shared with the OpenAI door).

    Calls to a hive carry that hive's own token (`hives.token_for`), never the queen's.

    A `queen_status` watch runs until cancelled, and a client that crashed never cancels
    it, so it ends itself once no stream has read it for `watch_idle_s`. `queen_url` is
    where the hives this queen starts beat to (None: its pidfile's URL).
    """

    pool = workers or WorkerPool(hives)
    view = StatusView(service, hives, pool, version=version)

    async def queen_status(op: QueenStatus, job: Job) -> dict[str, Any]:
        while True:
            status = await view.snapshot()
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
        return {"hives": view.hive_dicts(time.time())}

    async def model_serve(op: ModelServe, job: Job) -> dict[str, Any]:
        return await pool.replicas.serve(op, job)

    return {
        "queen_status": queen_status,
        "hive_list": hive_list,
        "model_serve": model_serve,
        "infer": infer_handler(pool),
        **forwarding_handlers(hives, pool),
        **hive_control_handlers(hives, queen_url=queen_url),
    }
