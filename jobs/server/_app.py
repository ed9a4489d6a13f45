"""The one job-server shell queen, hive and worker are built on: the app factory.

    job_app = create_app(ServerConfig("rbee-hive", version, state_dir), handlers, routes=[...])

A program supplies its handlers (or a factory that receives the JobService, when a
handler reads the service itself), extra routes (or, likewise, a factory of them: a door
that submits jobs receives the service it submits to), middleware and a lifespan for its
own resources; the shell adds the job routes, /health, /openapi.json, the error mapper,
Host/Origin/Content-Type checks (outermost but for a door's error shapes) and bearer auth
when a token is set. Serving the app is `jobs.server.serve`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobs.server._auth import BearerAuth
from jobs.server._errorshape import ErrorShape, ErrorShapes
from jobs.server._openapi import openapi_schema
from jobs.server._origin import HostOriginGuard
from jobs.server._routes import EXCEPTION_HANDLERS, create_job_routes
from jobs.server._service import Handler, HandlerFactory, JobService, Retention
from jobs.server._sse import KEEPALIVE_S
from jobs.server._tracing import TraceContext

Lifespan = Callable[[], AbstractAsyncContextManager[None]]
RouteFactory = Callable[[JobService], Sequence[BaseRoute]]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What every job server has: a name (actor, OpenAPI title), a version, a state folder."""

    name: str
    version: str
    state_dir: Path
    token: str | None = None  # the user's token (RBEE_TOKEN), required beyond loopback
    # Daemon-to-daemon credentials also accepted (jobs._credentials): with any, every
    # route but the open ones needs one of them or the token, on loopback too.
    credentials: tuple[str, ...] = ()
    keepalive_s: float = KEEPALIVE_S
    flush_interval_s: float | None = None
    retention: Retention | None = None
    durable: bool = True  # False: job table and event logs in memory only (see JobService)
    bind: str | None = None  # the address served (Host checks); a wildcard admits any Host


@dataclass(frozen=True, slots=True)
class JobApp:
    """The ASGI app and the JobService it serves; the server needs both to stop cleanly."""

    asgi: Starlette
    service: JobService
    name: str


def create_app(
    config: ServerConfig,
    handlers: Mapping[str, Handler] | HandlerFactory,
    *,
    routes: Sequence[BaseRoute] | RouteFactory = (),
    middleware: Sequence[Middleware] = (),
    lifespan: Lifespan | None = None,
    openapi_paths: dict[str, Any] | None = None,
    open_paths: Collection[str] = (),
    open_prefixes: Collection[str] = (),
    error_shapes: Mapping[str, ErrorShape] | None = None,
) -> JobApp:
    """A job server for `config` running `handlers`.

    `routes` come before the job routes, so a program may answer a path itself (the
    worker's /health). `lifespan` is entered inside the running service and left before
    it stops. Bearer auth wraps everything (outermost) when `config.token` or
    `config.credentials` are set;
    `open_paths` (exact) and `open_prefixes` stay open besides /health: pages that hold
    no secrets, such as the queen's dashboard. `error_shapes` (path prefix -> shape) puts
    every error answered under a prefix, the shell's own included, in a door's protocol.
    """
    service = JobService(
        config.state_dir,
        handlers,
        actor=config.name,
        flush_interval_s=config.flush_interval_s,
        retention=config.retention,
        durable=config.durable,
    )
    schema = openapi_schema(title=config.name, version=config.version, extra_paths=openapi_paths)

    async def openapi(request: Request) -> Response:
        return JSONResponse(schema)

    @asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[None]:
        async with service.running():
            if lifespan is None:
                yield
            else:
                async with lifespan():
                    yield

    all_routes = [
        *(routes(service) if callable(routes) else routes),
        *create_job_routes(service, version=config.version, keepalive_s=config.keepalive_s),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    tokens = [t for t in (config.token, *config.credentials) if t]
    auth = (
        [
            Middleware(
                BearerAuth,
                tokens=tokens,
                open_paths=open_paths,
                open_prefixes=open_prefixes,
            )
        ]
        if tokens
        else []
    )
    shapes = [Middleware(ErrorShapes, shapes=error_shapes)] if error_shapes else []
    asgi = Starlette(
        routes=all_routes,
        middleware=[
            *shapes,
            Middleware(HostOriginGuard, bind=config.bind),
            *auth,
            Middleware(TraceContext),
            *middleware,
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=run,
    )
    return JobApp(asgi, service, config.name)
