"""The hive's app: its job handlers, /v1/capabilities and heartbeats on the job-server shell.

Serving it (the lifespan) runs the worker supervisor (leaving it stops every worker) and
the heartbeats to the queen, when one is configured. On the way out the hive says goodbye
to the queen before it stops its workers, so the queen stops offering them at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hive._lending import lending_handlers, revoke_leftovers
from hive._links import Links
from hive._rpc_server import RpcServers
from hive.capabilities import capabilities
from hive.catalog import Catalog
from hive.heartbeat import LEAVE_S, Heartbeat
from hive.router import create_router
from hive.settings import HiveSettings
from hive.supervisor import Supervisor
from jobs import BEAT_NOW_PATH, rbee_version
from jobs.server import BodyLimit, JobApp, ServerConfig, error_body
from jobs.server import create_app as create_job_app

ACTOR = "rbee-hive"  # the hive's narration actor
# Backstop on the last beat and the goodbye (Heartbeat bounds them itself): a queen that
# hangs must not hold up the hive's stop, whose workers wait for it.
LEAVE_DEADLINE_S = LEAVE_S + 0.5


OPENAPI_PATHS: dict[str, Any] = {
    "/v1/capabilities": {
        "get": {
            "summary": "CPU cores, RAM and NVIDIA GPUs of this machine, its RPC support and "
            "the public key of its split workers' SSH links (rpc_link_key)",
            "responses": {"200": {"description": "capabilities"}},
        }
    },
    BEAT_NOW_PATH: {
        "post": {
            "summary": "Beat to the queen now (at most once per beat interval)",
            "responses": {
                "202": {"description": "{beat}: whether a beat was brought forward"},
                "409": {"description": "this hive beats to no queen"},
            },
        }
    },
}


def create_app(settings: HiveSettings, catalog: Catalog, *, url: str) -> JobApp:
    """A hive for `settings` serving `catalog` (loaded), reachable by the queen at `url`."""
    version = rbee_version()
    config = ServerConfig(
        ACTOR,
        version,
        settings.state_dir,
        token=settings.token,
        credentials=(settings.credential,),
        bind=settings.bind,
    )
    supervisor = Supervisor(
        logs_dir=settings.worker_logs,
        state_dir=settings.state_dir / "workers",
        hive_url=url,
        credential=settings.credential,
        ready_timeout_s=settings.worker_ready_timeout_s,
        bind=settings.bind,
    )

    rpc_servers = RpcServers()  # what this hive lends to splits (hive/_lending.py)
    links = Links(settings.link_home, settings.known_hosts)  # its split workers' SSH links

    async def get_capabilities(request: Request) -> Response:
        found = await anyio.to_thread.run_sync(capabilities)
        # The key a peer on another machine grants this hive's split workers' links.
        key = await anyio.to_thread.run_sync(links.public_key)
        return JSONResponse({"hive_id": settings.hive_id, **found, "rpc_link_key": key})

    heartbeat: Heartbeat | None = None
    if settings.queen_url is not None:
        heartbeat = Heartbeat(
            settings.queen_url,
            hive_id=settings.hive_id,
            url=url,
            version=version,
            workers=supervisor.infos,
            token=settings.credential,
            interval_s=settings.beat_interval_s,
            lend_bytes=settings.lend_bytes,
        )

    async def beat_now(request: Request) -> Response:
        if heartbeat is None:
            return JSONResponse(
                error_body("this hive beats to no queen (started without --queen-url)"),
                status_code=409,
            )
        return JSONResponse({"beat": heartbeat.wake()}, status_code=202)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(revoke_leftovers, settings.hive_id, settings.authorized_keys)
        async with (
            _revoking_at_exit(settings),
            links.running(),  # closed after the workers that use them stopped
            supervisor.running(),
            rpc_servers.running(),
            anyio.create_task_group() as tg,
        ):
            if heartbeat is not None:
                tg.start_soon(heartbeat.run, name="heartbeat")
            yield
            if heartbeat is not None:
                heartbeat.leave()  # the task group waits for the goodbye, within the deadline
                tg.cancel_scope.deadline = anyio.current_time() + LEAVE_DEADLINE_S

    return create_job_app(
        config,
        {
            **create_router(catalog, supervisor, links=links),
            **lending_handlers(
                rpc_servers, hive_id=settings.hive_id, authorized_keys=settings.authorized_keys
            ),
        },
        routes=[
            Route("/v1/capabilities", get_capabilities, methods=["GET"]),
            Route(BEAT_NOW_PATH, beat_now, methods=["POST"]),
        ],
        # Open: a queen that has just started asks its machine's hive for a beat, and only
        # the signed beat that follows proves the hive (jobs._credentials; queen.hives).
        open_paths=[BEAT_NOW_PATH],
        middleware=[Middleware(BodyLimit)],  # 1 MiB bodies, read within a deadline
        lifespan=lifespan,
        openapi_paths=OPENAPI_PATHS,
    )


@asynccontextmanager
async def _revoking_at_exit(settings: HiveSettings) -> AsyncIterator[None]:
    """On the way out, revoke the SSH link grants this hive still holds: its RPC servers
    stop with it."""
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(
                revoke_leftovers, settings.hive_id, settings.authorized_keys
            )
