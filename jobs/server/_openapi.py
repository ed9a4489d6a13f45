"""The OpenAPI document of a job server: routes described here, bodies from pydantic.

Starlette's SchemaGenerator reads YAML from docstrings (and needs PyYAML); the operation
union already is a schema, so the document is built from it directly.
"""

from __future__ import annotations

from typing import Any

from jobs import OPERATION_ADAPTER
from jobs.server._routes import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, MAX_PARAM_INT

_ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {}},
}
_STATES = ["queued", "running", "completed", "failed", "cancelled"]
_NUMBER = {"type": "number"}
_JOB = {
    "type": "object",
    "required": ["job_id", "operation", "params", "state", "created_at", "updated_at", "error"],
    "properties": {
        "job_id": {"type": "string"},
        "operation": {"type": ["string", "null"]},
        "params": {"type": "object"},
        "state": {"enum": _STATES},
        "created_at": _NUMBER,
        "updated_at": _NUMBER,
        "error": {"type": ["string", "null"]},
        "transitions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["state", "at"],
                "properties": {"state": {"enum": _STATES}, "at": _NUMBER},
            },
        },
        "events": {"type": "integer", "minimum": 0},
    },
}
_RESPONSES = {
    "Job": _JOB,
    "JobList": {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}},
    },
    "JobCreated": {
        "type": "object",
        "required": ["job_id", "sse_url"],
        "properties": {"job_id": {"type": "string"}, "sse_url": {"type": "string"}},
    },
    "JobCancel": {
        "type": "object",
        "required": ["job_id", "state"],
        "properties": {"job_id": {"type": "string"}, "state": {"enum": _STATES}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "version"],
        "properties": {"status": {"type": "string"}, "version": {"type": "string"}},
    },
}
_UNAUTHORIZED = "the server has a token and the request's bearer token is missing or wrong"


def _err(description: str) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _ok(
    description: str, schema: str | None = None, media: str = "application/json"
) -> dict[str, Any]:
    body = {"$ref": f"#/components/schemas/{schema}"} if schema else {}
    return {"description": description, "content": {media: {"schema": body}}}


def openapi_schema(
    *, title: str, version: str, extra_paths: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An OpenAPI 3.1 document for the job routes (plus a program's `extra_paths`, merged
    by method into the job routes': a method given as None is one the program refuses)."""
    body_schema = OPERATION_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
    defs = body_schema.pop("$defs", {})
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    seq = {"type": "integer", "minimum": 0, "maximum": MAX_PARAM_INT}
    stream_params = [
        job_id,
        {"name": "after", "in": "query", "schema": seq},
        {"name": "Last-Event-ID", "in": "header", "schema": seq},
    ]
    limit = {
        "name": "limit",
        "in": "query",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": LIST_LIMIT_MAX,
            "default": LIST_LIMIT_DEFAULT,
        },
    }
    traceparent = {
        "name": "traceparent",
        "in": "header",
        "description": "W3C trace context `00-<trace>-<span>-01`: the job joins that trace",
        "schema": {"type": "string"},
    }
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "Liveness and version",
                "responses": {
                    "200": _ok("ok: jobs can run", "Health"),
                    "503": _err("jobs cannot run now (service not running, disk full); why"),
                },
            }
        },
        "/v1/jobs": {
            "post": {
                "summary": "Create a job; it starts running at once",
                "parameters": [traceparent],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body_schema}},
                },
                "responses": {
                    "201": _ok("{job_id, sse_url}", "JobCreated"),
                    "400": _err("malformed JSON (or nested too deep)"),
                    "401": _err(_UNAUTHORIZED),
                    "404": _err("the operation names something unknown here (infer's worker_id)"),
                    "408": _err("the body did not arrive within the read deadline"),
                    "403": _err("a Host or browser Origin this daemon does not serve"),
                    "413": _err("the body is larger than the server's limit (1 MiB by default)"),
                    "415": _err("the body is not application/json"),
                    "422": _err("unknown operation, missing or extra field, wrong type or id"),
                    "502": _err("an upstream daemon is unreachable; the job log says more"),
                    "503": _err("the job service is not running (starting or stopping)"),
                    "507": _err("the disk holding the state folder is full (or failing)"),
                },
            },
            "get": {
                "summary": "List jobs, newest first",
                "parameters": [limit],
                "responses": {
                    "200": _ok("{jobs}", "JobList"),
                    "400": _err("limit is not an integer from 1 to the maximum"),
                    "401": _err(_UNAUTHORIZED),
                },
            },
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "A job's state and transition history",
                "parameters": [job_id],
                "responses": {
                    "200": _ok("job", "Job"),
                    "401": _err(_UNAUTHORIZED),
                    "404": _err("unknown job"),
                },
            },
            "delete": {
                "summary": "Cancel a running job",
                "parameters": [job_id],
                "responses": {
                    "200": _ok("{job_id, state}", "JobCancel"),
                    "202": _ok("cancelling", "JobCancel"),
                    "401": _err(_UNAUTHORIZED),
                    "404": _err("unknown job"),
                    "409": _err("the job has already ended"),
                },
            },
        },
        "/v1/jobs/{job_id}/stream": {
            "get": {
                "summary": "The job's events as SSE, ending with [DONE], [ERROR] … or [CANCELLED]",
                "parameters": stream_params,
                "responses": {
                    "200": _ok("event stream", media="text/event-stream"),
                    "400": _err("after or Last-Event-ID is not a plain non-negative integer"),
                    "401": _err(_UNAUTHORIZED),
                    "404": _err("unknown job"),
                },
            }
        },
        "/v1/jobs/{job_id}/trace": {
            "get": {
                "summary": "The job's timeline across hops: spans from its log (docs/tracing.md)",
                "parameters": [job_id],
                "responses": {
                    "200": _ok("{trace_id, parent_job, job_id, start, end, duration_s, spans}"),
                    "401": _err(_UNAUTHORIZED),
                    "404": _err("unknown job"),
                },
            }
        },
    }
    for path, item in (extra_paths or {}).items():  # merged by method; None drops one
        merged = {**paths.get(path, {}), **item}
        paths[path] = {method: spec for method, spec in merged.items() if spec is not None}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": {**defs, **_RESPONSES, "Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
