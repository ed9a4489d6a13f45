"""The worker's routes as its /openapi.json describes them: its /health, its one door for
generations (`POST /v1/inference`), its embeddings (`POST /v1/embeddings`), and the job
API without `POST /v1/jobs` (refused)."""

from __future__ import annotations

from typing import Any

from jobs import Infer
from worker._embeddings import EmbeddingsBody
from worker.inference import NOT_HERE

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _ERROR}


def inference_body() -> dict[str, Any]:
    """The `infer` fields a worker takes: all but those naming where it runs."""
    schema = Infer.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    for name in NOT_HERE:
        schema["properties"].pop(name, None)
    schema["required"] = [r for r in schema.get("required", []) if r not in NOT_HERE]
    schema["additionalProperties"] = False
    schema["title"] = "Inference"
    return schema


def openapi_paths() -> dict[str, Any]:
    """The worker's own paths, merged into the job server's (jobs.server.openapi_schema)."""
    return {
        "/health": {
            "get": {
                "summary": "Loading, ready or failed; the model, its slots, threads, context",
                "responses": {
                    "200": {
                        "description": "{status, worker_id, model, slots, slots_busy, …}",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/v1/jobs": {"post": None},  # generations come in through POST /v1/inference only
        "/v1/inference": {
            "post": {
                "summary": "Generate for a prompt or chat messages; follow the job's stream",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": inference_body()}},
                },
                "responses": {
                    "201": {
                        "description": "{job_id, sse_url}",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/JobCreated"}
                            }
                        },
                    },
                    "400": _error("not a JSON object, or messages the template refuses"),
                    "401": _error("not this worker's credential"),
                    "403": _error("a Host or browser Origin this worker does not serve"),
                    "408": _error("the body did not arrive within the read deadline"),
                    "413": _error("the body is larger than 1 MiB"),
                    "415": _error("the body is not application/json"),
                    "422": _error("a missing, extra or out-of-range field"),
                    "503": _error("loading, or every slot busy and the queue full (Retry-After)"),
                },
            }
        },
        "/v1/embeddings": {
            "post": {
                "summary": "A unit vector for each input (texts or token-id lists), pooled",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": embeddings_body()}},
                },
                "responses": {
                    "200": {
                        "description": "{data: [[float, …]], prompt_tokens, dimensions, pooling}",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "400": _error("not {input: [...]}, an empty input, or one over the context"),
                    "401": _error("not this worker's credential"),
                    "403": _error("a Host or browser Origin this worker does not serve"),
                    "408": _error("the body did not arrive within the read deadline"),
                    "413": _error("the body is larger than 1 MiB"),
                    "415": _error("the body is not application/json"),
                    "503": _error("the model is still loading (Retry-After)"),
                },
            }
        },
    }


def embeddings_body() -> dict[str, Any]:
    """What `POST /v1/embeddings` takes: `input`, a list of texts or of token-id lists."""
    schema = EmbeddingsBody.model_json_schema()
    schema["title"] = "Embeddings"
    return schema
