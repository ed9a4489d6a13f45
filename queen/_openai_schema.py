"""The OpenAI door's routes in the queen's /openapi.json: bodies from the pydantic models
the door parses with, answers in OpenAI's shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from queen._openai_embeddings import OPENAPI_PATHS as EMBEDDINGS_PATHS
from queen._openai_wire import ChatBody, CompletionBody

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}
_SHARED_ERRORS = {
    "401": "the queen has a token and the API key is missing or wrong",
    "403": "a Host or browser Origin the queen does not serve",
    "415": "the body is not application/json",
}
_BODY_ERRORS = {
    **_SHARED_ERRORS,
    "400": "a malformed body, or context_length_exceeded: the prompt is longer than the context",
    "404": "model_not_found: no worker, catalog or model reference has this model",
    "408": "the body did not arrive within the read deadline",
    "413": "the body is larger than the queen's limit (1 MiB by default)",
    "429": "too many requests waiting; retry after Retry-After seconds",
    "502": "the worker failed or vanished during the generation",
    "503": "no worker can take the prompt now (loading, busy); retry after Retry-After",
    "504": "the generation ran past the queen's generation limit (not retried)",
    "507": "the disk holding the queen's state folder is full",
}


def _inlined(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` written in place: an OpenAPI document has no
    `#/$defs/…` to refer to (and these bodies nest no model in itself)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


def _errors(descriptions: dict[str, str]) -> dict[str, Any]:
    return {
        status: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
        for status, text in descriptions.items()
    }


def _completion(summary: str, body: dict[str, Any], answer: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {
                    "description": f"a {answer} object, or (stream) SSE chunks ending data: [DONE]",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_errors(_BODY_ERRORS),
            },
        }
    }


OPENAPI_PATHS: dict[str, Any] = {
    "/v1/chat/completions": _completion(
        "OpenAI chat completion: the messages through the model's chat template",
        _inlined(ChatBody),
        "chat.completion",
    ),
    "/v1/completions": _completion(
        "OpenAI completion: the prompt as given",
        _inlined(CompletionBody),
        "text_completion",
    ),
    "/v1/models": {
        "get": {
            "summary": "The models a prompt can name: builtin, loaded, in the hives' catalogs",
            "responses": {
                "200": {
                    "description": '{"object": "list", "data": [model]}',
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"data": {"type": "array", "items": _MODEL}},
                            }
                        }
                    },
                },
                **_errors(_SHARED_ERRORS),
            },
        }
    },
    "/v1/models/{model}": {
        "get": {
            "summary": "One model of the list",
            "parameters": [
                {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "the model",
                    "content": {"application/json": {"schema": _MODEL}},
                },
                **_errors({**_SHARED_ERRORS, "404": "model_not_found: not in GET /v1/models"}),
            },
        }
    },
    **EMBEDDINGS_PATHS,  # POST /v1/embeddings (queen/_openai_embeddings.py)
}
