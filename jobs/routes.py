"""Starlette routes for a job server (queen now, hive later) and its one error mapper.

    POST   /v1/jobs              -> 201 {"job_id", "sse_url"}
    GET    /v1/jobs              -> {"jobs": [...]}, newest first
    GET    /v1/jobs/{id}         -> state + transitions
    GET    /v1/jobs/{id}/stream  -> SSE (see jobs.sse), resumable via Last-Event-ID / ?after=N
    DELETE /v1/jobs/{id}         -> cancel (404 unknown, 409 already ended)
    GET    /health               -> {"status": "ok", "version"}

Every error answers `{"error": <one sentence>, "detail": <anything>}`.
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobs.errors import DaemonUnreachable, InvalidRequest, JobError, JobFinished
from jobs.operations import parse_operation
from jobs.service import JobService
from jobs.sse import KEEPALIVE_S, EventStreamResponse

READY_WAIT_S = 10.0  # how long POST waits for an upstream handler to confirm (then 201)
CANCEL_REPLY_WAIT_S = 3.0  # how long DELETE waits to report the final state (then 202)
LIST_LIMIT_MAX = 1000  # most jobs one GET /v1/jobs returns


def error_body(message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": message, "detail": detail}


def create_job_routes(
    service: JobService, *, version: str, keepalive_s: float = KEEPALIVE_S
) -> list[BaseRoute]:
    """The job routes plus /health, bound to `service` (which must be running to serve)."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": version})

    async def submit(request: Request) -> Response:
        operation = parse_operation(await request.body())
        job = await service.submit(operation)
        with anyio.move_on_after(READY_WAIT_S):
            await job.ready.wait()
        body = {"job_id": job.id, "sse_url": f"/v1/jobs/{job.id}/stream"}
        if isinstance(job.error, DaemonUnreachable):  # the job failed and its log says so
            return JSONResponse(
                error_body(str(job.error), {**job.error.detail, **body}), status_code=502
            )
        return JSONResponse(body, status_code=201)

    async def list_jobs(request: Request) -> Response:
        limit = _int_param(request.query_params.get("limit"), "limit", default=100)
        records = await service.list(limit=min(max(limit, 1), LIST_LIMIT_MAX))
        return JSONResponse({"jobs": [r.to_dict() for r in records]})

    async def get_job(request: Request) -> Response:
        record = await service.get(request.path_params["job_id"])
        body = record.to_dict()
        count = service.live_event_count(record.id)
        if count is not None:
            body["events"] = count  # lets a client print "what exists now" and stop
        return JSONResponse(body)

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

    return [
        Route("/health", health, methods=["GET"]),
        Route("/v1/jobs", submit, methods=["POST"]),
        Route("/v1/jobs", list_jobs, methods=["GET"]),
        Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/v1/jobs/{job_id}", cancel_job, methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/stream", stream, methods=["GET"]),
    ]


def _resume_point(request: Request) -> int:
    """Last-Event-ID (what a reconnecting EventSource sends) wins over ?after=N."""
    header = request.headers.get("last-event-id")
    if header is not None and header.strip():
        return _int_param(header, "Last-Event-ID", default=0)
    return _int_param(request.query_params.get("after"), "after", default=0)


def _int_param(raw: str | None, name: str, *, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidRequest(
            f"{name} must be a non-negative integer, got {raw!r}", detail={name: raw}, status=400
        )
    return value


async def job_error_response(request: Request, exc: Exception) -> Response:
    """The one mapper from errors to `{"error", "detail"}` responses."""
    if isinstance(exc, JobError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(str(exc), exc.detail), exc.status, headers=headers)
    if isinstance(exc, HTTPException):
        message = {
            404: f"no route {request.url.path}; see GET /openapi.json for the routes",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return JSONResponse(error_body(message), exc.status_code, headers=exc.headers)
    return JSONResponse(
        error_body(f"internal error ({type(exc).__name__}: {exc}); see the server's stderr"),
        500,
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    JobError: job_error_response,
    HTTPException: job_error_response,
    Exception: job_error_response,
}
