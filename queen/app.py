"""The queen's ASGI app: job routes, OpenAPI, bearer auth, and the job service lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs.auth import BearerAuth
from jobs.openapi import openapi_schema
from jobs.routes import EXCEPTION_HANDLERS, create_job_routes
from jobs.service import JobService
from queen.hives import HiveRegistry
from queen.router import create_router
from queen.settings import QueenSettings


def queen_version() -> str:
    try:
        return version("rbee")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def create_app(settings: QueenSettings) -> Starlette:
    """A queen for `settings`; serving it (lifespan) opens the job registry and logs.

    `app.state.service` is the JobService, so the entry point can cancel jobs on SIGTERM.
    """
    ver = queen_version()
    hives = HiveRegistry(settings.hives)
    service = JobService(
        settings.paths.state,
        {},
        actor="queen-rbee",
        flush_interval_s=settings.flush_interval_s,
        retention=settings.retention,
    )
    service.handlers.update(create_router(service, hives, version=ver, token=settings.token))
    schema = openapi_schema(title="queen-rbee", version=ver)

    async def openapi(request: Request) -> Response:
        return JSONResponse(schema)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service.running():
            yield

    routes = [
        *create_job_routes(service, version=ver, keepalive_s=settings.keepalive_s),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    middleware = [Middleware(BearerAuth, token=settings.token)] if settings.token else []
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.hives = hives
    return app
