"""The queen's app: its job handlers on the shared job-server shell (jobs.server)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from jobs import rbee_version
from jobs.server import BodyLimit, Handler, JobApp, JobService, ServerConfig
from jobs.server import create_app as create_job_app
from queen.beats import OPENAPI_PATHS, heartbeat_routes
from queen.dashboard import OPEN_PATHS, OPEN_PREFIXES, dashboard_routes
from queen.hives import HiveRegistry
from queen.infer import WorkerPool
from queen.openai import OpenAIDoor
from queen.router import create_router
from queen.settings import QueenSettings


def create_app(settings: QueenSettings, *, hives: HiveRegistry | None = None) -> JobApp:
    """A queen for `settings`; serving it (lifespan) opens the job registry and logs."""
    version = rbee_version()
    hives = hives or HiveRegistry(settings.hives, tokens=settings.hive_tokens)
    config = ServerConfig(
        "queen-rbee",
        version,
        settings.paths.state,
        token=settings.token,
        keepalive_s=settings.keepalive_s,
        flush_interval_s=settings.flush_interval_s,
        retention=settings.retention,
        bind=settings.bind,
    )
    workers = WorkerPool(hives)

    def handlers(service: JobService) -> Mapping[str, Handler]:
        return create_router(
            service, hives, version=version, workers=workers, watch_idle_s=settings.watch_idle_s
        )

    def routes(service: JobService) -> list[BaseRoute]:
        door = OpenAIDoor(workers, service)
        return [*heartbeat_routes(hives), *door.routes(), *dashboard_routes()]

    return create_job_app(
        config,
        handlers,
        routes=routes,
        openapi_paths=OPENAPI_PATHS,
        open_paths=OPEN_PATHS,
        open_prefixes=OPEN_PREFIXES,
        middleware=[
            Middleware(
                BodyLimit,
                max_bytes=settings.max_body_bytes,
                read_timeout_s=settings.body_read_timeout_s,
            )
        ],
    )
