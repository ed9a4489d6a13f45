"""The OpenAPI document of a job server: routes described here, bodies from pydantic.

Starlette's SchemaGenerator reads YAML from docstrings (and needs PyYAML); the operation
union already is a schema, so the document is built from it directly.
"""

from __future__ import annotations

from typing import Any

from jobs.operations import OPERATION_ADAPTER

_ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {}},
}


def _err(description: str) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _ok(description: str, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {}}}}


def openapi_schema(
    *, title: str, version: str, extra_paths: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An OpenAPI 3.1 document for the job routes (plus a program's `extra_paths`)."""
    body_schema = OPERATION_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
    defs = body_schema.pop("$defs", {})
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    stream_params = [
        job_id,
        {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0}},
    ]
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness and version", "responses": {"200": _ok("ok")}}},
        "/v1/jobs": {
            "post": {
                "summary": "Create a job; it starts running at once",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body_schema}},
                },
                "responses": {
                    "201": _ok("{job_id, sse_url}"),
                    "400": _err("malformed JSON"),
                    "422": _err("unknown operation, missing or extra field"),
                    "502": _err("an upstream daemon is unreachable; the job log says more"),
                },
            },
            "get": {"summary": "List jobs, newest first", "responses": {"200": _ok("{jobs}")}},
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "A job's state and transition history",
                "parameters": [job_id],
                "responses": {"200": _ok("job"), "404": _err("unknown job")},
            },
            "delete": {
                "summary": "Cancel a running job",
                "parameters": [job_id],
                "responses": {
                    "200": _ok("{job_id, state}"),
                    "202": _ok("cancelling"),
                    "404": _err("unknown job"),
                    "409": _err("the job has already ended"),
                },
            },
        },
        "/v1/jobs/{job_id}/stream": {
            "get": {
                "summary": "The job's events as SSE, ending with [DONE], [ERROR] … or [CANCELLED]",
                "parameters": stream_params,
                "responses": {"200": _ok("event stream", "text/event-stream")},
            }
        },
    }
    paths.update(extra_paths or {})
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": {**defs, "Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
