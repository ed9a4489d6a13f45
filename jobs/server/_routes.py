"""The Starlette routes every job server (queen, hive, worker) serves, and its one error mapper.

    POST   /v1/jobs              -> 201 {"job_id", "sse_url"}
    GET    /v1/jobs              -> {"jobs": [...]}, newest first
    GET    /v1/jobs/{id}         -> state + transitions
    GET    /v1/jobs/{id}/stream  -> SSE (see _sse.py), resumable via Last-Event-ID / ?after=N
    GET    /v1/jobs/{id}/trace   -> the job's timeline across hops (see _tracing.py)
    DELETE /v1/jobs/{id}         -> cancel (404 unknown, 409 already ended)
    GET    /health               -> {"status": "ok", "version"}; 503 + {"error", "detail"} when
                                    jobs cannot run (service not running, disk full)

Every error answers `{"error": <one sentence>, "detail": <anything>}`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from jobs import DaemonUnreachable, InvalidRequest, JobError, JobFinished, parse_operation
from jobs.server._service import Job, JobService
from jobs.server._sse import KEEPALIVE_S, EventStreamResponse
from jobs.server._tracing import job_trace

READY_WAIT_S = 10.0  # how long POST waits for an upstream handler to confirm (then 201)
CANCEL_REPLY_WAIT_S = 3.0  # how long DELETE waits to report the final state (then 202)
LIST_LIMIT_MAX = 1000  # most jobs one GET /v1/jobs returns
LIST_LIMIT_DEFAULT = 100  # jobs GET /v1/jobs returns without ?limit
UINT_PATTERN = re.compile(r"[0-9]{1,18}")  # ASCII digits only, below 2**63 (int() takes more)
MAX_PARAM_INT = 10**18 - 1  # the largest value UINT_PATTERN admits


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: a lone surrogate stored by an older server (or read from
    a damaged row) becomes `?` instead of turning every listing into a 500."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", errors="replace")


def error_body(message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": message, "detail": detail}


def create_job_routes(
    service: JobService, *, version: str, keepalive_s: float = KEEPALIVE_S
) -> list[BaseRoute]:
    """The job routes plus /health, bound to `service` (which must be running to serve)."""

    async def health(request: Request) -> Response:
        """200 only when jobs can run; 503 with the reason (service down, disk full) else."""
        problem = await service.problem()
        if problem is None:
            return JSONResponse({"status": "ok", "version": version})
        body = {"status": "unavailable", "version": version, **error_body(str(problem))}
        return JSONResponse({**body, "detail": problem.detail}, status_code=503)

    async def submit(request: Request) -> Response:
        operation = parse_operation(await request.body())
        job = await service.submit(operation)
        if not await ready_unless_hung_up(job, request, within=READY_WAIT_S):
            # The client left without the job's id (a keeper's Ctrl-C while an upstream
            # was slow to take the job): nobody can follow or cancel it, so stop it here.
            with contextlib.suppress(JobError):
                await service.cancel(job.id)
            return Response(status_code=499)  # nginx's "client closed request"; unread
        body = {"job_id": job.id, "sse_url": f"/v1/jobs/{job.id}/stream"}
        error = job.error
        # Failed before it was ready (an upstream handler checks first): the request was
        # wrong (400/422), named something the server does not know (404), or the upstream
        # is down (502). The job and its log exist too.
        if isinstance(error, DaemonUnreachable) or (
            isinstance(error, InvalidRequest) and error.status in (400, 404, 422)
        ):
            detail = error.detail if isinstance(error.detail, dict) else {"detail": error.detail}
            return JSONResponse(
                error_body(str(error), {**detail, **body}), status_code=error.status
            )
        return JSONResponse(body, status_code=201)

    async def list_jobs(request: Request) -> Response:
        limit = _int_param(_query(request, "limit"), "limit", default=LIST_LIMIT_DEFAULT)
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidRequest(
                f"limit must be 1 to {LIST_LIMIT_MAX}, got {limit}",
                detail={"limit": limit},
                status=400,
            )
        records = await service.list(limit=limit)
        return SafeJSONResponse({"jobs": [r.to_dict() for r in records]})

    async def get_job(request: Request) -> Response:
        record = await service.get(request.path_params["job_id"])
        body = record.to_dict()
        live = service.store.memory(record.id)  # a job still held in memory
        if live is not None:
            body["events"] = len(live)  # lets a client print "what exists now" and stop
        return SafeJSONResponse(body)

    async def cancel_job(request: Request) -> Response:
        job = await service.cancel(request.path_params["job_id"])
        with anyio.move_on_after(CANCEL_REPLY_WAIT_S):
            await job.finished.wait()
        if job.finished.is_set() and job.state != "cancelled":
            raise JobFinished(job.id, job.state)  # it ended on its own before the cancel bit
        status = 200 if job.finished.is_set() else 202
        return JSONResponse({"job_id": job.id, "state": job.state}, status_code=status)

    async def stream(request: Request) -> Response:
        after = _resume_point(request)
        reader = await service.reader(request.path_params["job_id"], after)
        return EventStreamResponse(  # type: ignore[return-value]
            reader, keepalive_s=keepalive_s, open_streams=service.open_streams
        )

    async def trace(request: Request) -> Response:
        return SafeJSONResponse(await job_trace(service, request.path_params["job_id"]))

    return [
        Route("/health", health, methods=["GET"]),
        Route("/v1/jobs", submit, methods=["POST"]),
        Route("/v1/jobs", list_jobs, methods=["GET"]),
        Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}", cancel_job, methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/stream", stream, methods=["GET"]),
        Route("/v1/jobs/{job_id}/trace", trace, methods=["GET"]),
    ]


def _resume_point(request: Request) -> int:
    """Last-Event-ID (what a reconnecting EventSource sends) wins over ?after=N; an empty
    one is what EventSource sends before it has seen an id, so it means "from the start"."""
    header = request.headers.get("last-event-id")
    if header:
        return _int_param(header, "Last-Event-ID", default=0)
    return _int_param(_query(request, "after"), "after", default=0)


def _query(request: Request, name: str) -> str | None:
    """The one value of query parameter `name`; given twice it is ambiguous, so a 400."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidRequest(
            f"{name} is given {len(values)} times; give it once",
            detail={name: values},
            status=400,
        )
    return values[0] if values else None


async def ready_unless_hung_up(job: Job, request: Request, *, within: float | None) -> bool:
    """Wait until `job` is ready (at most `within` seconds, if given); False if the client
    hung up first (its job is then the caller's to cancel: nobody else knows its id)."""
    return await until_hung_up(request, job.ready.wait, within=within)


async def until_hung_up(
    request: Request, wait: Callable[[], Awaitable[None]], *, within: float | None
) -> bool:
    """Await `wait()` (at most `within` seconds, if given); False if the client hung up
    first, which cancels it. Raises what `wait()` raises.

    The body has been read, so the connection's next message is its disconnect."""
    hung_up = False
    try:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal hung_up
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                hung_up = True
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            with anyio.move_on_after(within if within is not None else math.inf):
                await wait()
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # `wait`'s own error, not a group of one
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    return not hung_up


def _int_param(raw: str | None, name: str, *, default: int) -> int:
    """A non-negative integer written plainly: `int()` would also take " 5 ", "1_000",
    "+3" and non-ASCII digits, which no client sends on purpose."""
    if raw is None:
        return default
    if not UINT_PATTERN.fullmatch(raw):
        raise InvalidRequest(
            f"{name} must be a non-negative integer written in digits 0-9, got {raw!r}",
            detail={name: raw},
            status=400,
        )
    return int(raw)


async def job_error_response(request: Request, exc: Exception) -> Response:
    """The one mapper from errors to `{"error", "detail"}` responses."""
    if isinstance(exc, JobError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return SafeJSONResponse(error_body(str(exc), exc.detail), exc.status, headers=headers)
    if isinstance(exc, HTTPException):
        headers = dict(exc.headers or {})
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.url.path}; see GET /openapi.json for the routes"
        elif exc.status_code == 405:
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = (
                f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
            )
        return SafeJSONResponse(error_body(message), exc.status_code, headers=headers)
    return SafeJSONResponse(
        error_body(f"internal error ({type(exc).__name__}: {exc}); see the server's stderr"),
        500,
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path. Starlette's own `Allow` names only the
    first route that matched the path, and the job routes are one route per method."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    JobError: job_error_response,
    HTTPException: job_error_response,
    Exception: job_error_response,
}
