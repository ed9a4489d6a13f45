"""The queen's status, a read-only view: `GET /v1/status` answers one snapshot.

    view = StatusView(service, hives, workers, version=version)
    routes = status_routes(view)          # GET /v1/status, behind the user's token

Status is not a job: jobs are what a user asked for, and a dashboard tab or a script
looking at the queen asked for nothing, so looking leaves nothing in the job list. The
dashboard polls this route while its tab is visible; `keeper status` and the keeper's
autostart read it too. The `queen_status` operation stays for older clients and answers
the same snapshot.

The page polls rather than following a stream: an open stream would hold a stopping
queen up for its whole grace period (the job server ends only job streams on a stop).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import daemons
from jobs.server import JobService
from queen.hives import HiveRegistry
from queen.infer import WorkerPool

STATUS_PATH = "/v1/status"

OPENAPI_PATHS: dict[str, Any] = {
    STATUS_PATH: {
        "get": {
            "summary": "The queen's status: version, uptime, job counts, hives and workers",
            "description": (
                "A read-only snapshot; reading it creates no job. Needs the user's token "
                "beyond loopback, like the job routes."
            ),
            "responses": {
                "200": {
                    "description": "The snapshot",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
}


class StatusView:
    """What the queen knows now: its jobs by state, its hives (configured or heard from)
    with their workers as the worker pool knows them (a spawn shows before its beat)."""

    def __init__(
        self, service: JobService, hives: HiveRegistry, workers: WorkerPool, *, version: str
    ) -> None:
        self.service = service
        self.hives = hives
        self.workers = workers
        self.version = version

    def hive_dicts(self, now: float) -> list[dict[str, Any]]:
        """The hives as `Hive.to_dict` gives them, with the pool's workers."""
        by_hive: dict[str, list[dict[str, Any]]] = {}
        for pick in self.workers.known():
            by_hive.setdefault(pick.hive_id, []).append(pick.worker.model_dump(mode="json"))
        return [{**h.to_dict(now), "workers": by_hive.get(h.id, [])} for h in self.hives.all()]

    async def snapshot(self) -> dict[str, Any]:
        """One snapshot: the shape `keeper status` and the dashboard render."""
        now = time.time()
        known = self.hive_dicts(now)
        return {
            "version": self.version,
            "uptime_s": round(now - self.service.started_at, 3),
            "taken_at": now,
            "jobs": await self.service.registry.counts(),
            "hives": known,
            "workers": [{"hive_id": h["hive_id"], **w} for h in known for w in h["workers"]],
            "served": self.workers.replicas.table(),  # `keeper model serve`'s replicas
            **configured_hives(),
        }


def configured_hives() -> dict[str, Any]:
    """`configured`: the hives this queen can start and stop (hive_start, hive_stop):
    localhost and the hives config's aliases, each with where it runs; with
    `config_error` instead when the hives config cannot be read."""
    try:
        hosts = daemons.configured_hosts()
    except daemons.DaemonError as exc:
        return {"configured": [], "config_error": str(exc)}
    return {"configured": [{"hive_id": h.alias, "where": _where(h)} for h in hosts]}


def _where(host: daemons.HiveHost) -> str:
    """`this machine`, or `ssh rbee@10.0.0.5` (the user left to the SSH config if unset)."""
    if host.is_local:
        return "this machine"
    user = f"{host.user}@" if host.user else ""
    return f"ssh {user}{host.ssh_host}"


def status_routes(view: StatusView) -> list[BaseRoute]:
    """`GET /v1/status`; the job server's bearer auth covers it like the job routes."""

    async def status(request: Request) -> Response:
        return JSONResponse(await view.snapshot(), headers={"cache-control": "no-store"})

    return [Route(STATUS_PATH, status, methods=["GET"])]
