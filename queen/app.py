"""The queen's app: its job handlers on the shared job-server shell (jobs.server)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from jobs import LOOPBACK, cluster_secret, rbee_version
from jobs.server import BodyLimit, Handler, JobApp, JobService, ServerConfig
from jobs.server import create_app as create_job_app
from queen._placements_route import OPENAPI_PATHS as PLACEMENTS_OPENAPI_PATHS
from queen._placements_route import Placements, placement_routes
from queen.beats import BEAT_PATHS, OPENAPI_PATHS, heartbeat_routes
from queen.dashboard import OPEN_PATHS, OPEN_PREFIXES, dashboard_routes
from queen.hives import HiveRegistry
from queen.infer import REPLICAS_FILE, QueueGuard, WorkerPool
from queen.metrics import OPENAPI_PATHS as METRICS_OPENAPI_PATHS
from queen.metrics import QueenMetrics
from queen.openai import DOOR_PREFIXES, OpenAIDoor, openai_error
from queen.openai import OPENAPI_PATHS as DOOR_OPENAPI_PATHS
from queen.router import create_router
from queen.settings import QueenSettings
from queen.status import OPENAPI_PATHS as STATUS_OPENAPI_PATHS
from queen.status import StatusView, status_routes

# Every route the queen adds to the job server's, as /openapi.json describes them.
QUEEN_OPENAPI_PATHS = {
    **OPENAPI_PATHS,
    **DOOR_OPENAPI_PATHS,
    **METRICS_OPENAPI_PATHS,
    **STATUS_OPENAPI_PATHS,
    **PLACEMENTS_OPENAPI_PATHS,
}


def create_app(settings: QueenSettings, *, hives: HiveRegistry | None = None) -> JobApp:
    """A queen for `settings`; serving it (lifespan) opens the job registry and logs."""
    version = rbee_version()
    hives = hives or HiveRegistry(
        settings.hives,
        tokens=settings.hive_tokens,
        secret=cluster_secret(settings.paths),
        implicit=settings.implicit_hives,
    )
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
    metrics = QueenMetrics(hives)
    workers = WorkerPool(
        hives,
        max_queue=settings.max_queue,
        keep_alive_s=settings.keep_alive_s,
        metrics=metrics,
        placement=settings.placement,
        replicas_path=settings.paths.state / REPLICAS_FILE,
    )

    def handlers(service: JobService) -> Mapping[str, Handler]:
        return create_router(
            service,
            hives,
            version=version,
            workers=workers,
            watch_idle_s=settings.watch_idle_s,
            queen_url=own_url(settings),
        )

    def routes(service: JobService) -> list[BaseRoute]:
        door = OpenAIDoor(
            workers,
            service,
            metrics=metrics,
            generation_timeout_s=settings.generation_timeout_s,
        )
        return [
            *heartbeat_routes(hives),
            *door.routes(),
            *metrics.routes(),
            *dashboard_routes(),
            *status_routes(StatusView(service, hives, workers, version=version)),
            *placement_routes(Placements(hives)),
        ]

    return create_job_app(
        config,
        handlers,
        routes=routes,
        openapi_paths=QUEEN_OPENAPI_PATHS,
        open_paths=[*OPEN_PATHS, *BEAT_PATHS],  # beats check their hive's credential
        open_prefixes=OPEN_PREFIXES,
        error_shapes=dict.fromkeys(DOOR_PREFIXES, openai_error),  # OpenAI clients read these
        lifespan=workers.running,  # keep_alive: idle workers are stopped
        middleware=[
            Middleware(
                BodyLimit,
                max_bytes=settings.max_body_bytes,
                read_timeout_s=settings.body_read_timeout_s,
            ),
            Middleware(QueueGuard, pool=workers),  # a full queue: 503 before any job
        ],
    )


def own_url(settings: QueenSettings) -> str | None:
    """Where hives this queen starts should beat to: its own address (loopback when it
    listens on every address); None while its port is not known yet (port 0)."""
    if not settings.port:
        return None
    host = LOOPBACK if settings.bind in ("0.0.0.0", "::", "") else settings.bind
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}"
