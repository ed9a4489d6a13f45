"""The OpenAI door's errors, in OpenAI's shape `{"error": {message, type, param, code}}`.

OpenAI clients decide by status what to do next: the official one retries 408, 409, 429
and every 5xx (twice, by default), and raises a class per status (NotFoundError,
BadRequestError, …). So a caller's mistake must never be a 5xx (each typo would run three
failed jobs), and an overload says when to come back (`Retry-After`). `openai_error` is
also the shape the job server's own answers take on the door's paths (401, 403, 408,
413, 415, 507: see jobs.server.ErrorShapes).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse

RETRY_AFTER_S = 1  # what an overloaded door asks a client to wait, unless the error says
# The worker's refusal of a prompt its context cannot hold (worker/engine.py `generate`),
# wherever it comes from: its POST answer, or its failed job relayed by the queen.
CONTEXT_EXCEEDED = re.compile(r"the prompt is (\d+) tokens and this model's context holds (\d+)")
# OpenAI's `code` for statuses whose cause is one thing whoever answers them.
CODES = {
    401: "invalid_api_key",
    403: "forbidden",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limit_exceeded",
    503: "overloaded",
    504: "generation_timeout",
    507: "insufficient_storage",
}


def error_type(status: int) -> str:
    """OpenAI's `type` for a status: the caller's mistake, a rate limit, or the server's."""
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error" if status < 500 else "server_error"


def openai_error(status: int, message: str, detail: Any = None) -> dict[str, Any]:
    """A job-server error body `{"error", "detail"}` in OpenAI's shape (the detail goes:
    OpenAI clients read message, type, param and code only)."""
    return {
        "error": {
            "message": message,
            "type": error_type(status),
            "param": None,
            "code": CODES.get(status),
        }
    }


class DoorError(Exception):
    """A request the door answers with OpenAI's error shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code or CODES.get(status)
        self.retry_after_s = retry_after_s
        self.retry = retry  # None: the client's own rule; else `x-should-retry`, which
        # the official clients obey over their status rule

    def body(self) -> dict[str, Any]:
        kind = error_type(self.status)
        return {
            "error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}
        }

    def response(self) -> JSONResponse:
        headers = {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after_s)))
        if self.retry is not None:
            headers["x-should-retry"] = "true" if self.retry else "false"
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def model_not_found(model: str) -> DoorError:
    return DoorError(
        f"the model {model!r} does not exist here: no worker has it loaded, no hive has it "
        "in its catalog, and it is not a model reference a hive could fetch "
        "(builtin:tiny, builtin:smollm2, hf:org/repo/file.gguf, https://…/x.gguf or a path "
        "to a .gguf); GET /v1/models lists the models available",
        status=404,
        param="model",
        code="model_not_found",
    )


def from_job_error(error: BaseException, *, param: str) -> DoorError:
    """The door's answer for an `infer` job that failed before a worker took it."""
    message = str(error)
    status = getattr(error, "status", 500)
    status = status if isinstance(status, int) and 400 <= status < 600 else 500
    if CONTEXT_EXCEEDED.search(message):
        return context_exceeded(message, param=param)
    refused = _refusal(error)
    if refused is not None:  # a hive refused the model the request named: no such file, …
        code = "model_not_found" if refused == 404 else None
        return DoorError(message, status=refused, param="model", code=code)
    if status == 422:  # a job-API status; OpenAI says 400 for every invalid request
        status = 400
    if status in (429, 503):
        return DoorError(message, status=status, retry_after_s=_retry_after(error))
    return DoorError(message, status=status)


def _retry_after(error: BaseException) -> float:
    """The seconds an overloaded queen asks the client to wait: the scheduler's guess
    (queen._admission.QueueFull's `retry_after`, in its detail too), else RETRY_AFTER_S."""
    detail = getattr(error, "detail", None)
    given = detail.get("retry_after") if isinstance(detail, dict) else None
    given = getattr(error, "retry_after", given)
    return float(given) if isinstance(given, int | float) and given > 0 else RETRY_AFTER_S


def _refusal(error: BaseException) -> int | None:
    """400 or 404 when an upstream daemon refused the job for what the request asked
    (`UpstreamFailed` from the upstream's own 4xx, e.g. a hive with no such model file);
    None for anything else, credentials included (the operator's to fix, not the caller's)."""
    cause = error.__cause__
    while cause is not None:
        status = getattr(cause, "status", None)
        if status in (400, 404, 422):
            return 404 if status == 404 else 400
        cause = cause.__cause__
    return None


def from_failed_job(final: dict[str, Any], *, param: str) -> DoorError:
    """The door's answer for a generation that ended without completing."""
    if final.get("state") == "cancelled":
        return DoorError("the generation was cancelled", status=502)
    reason = str(final.get("error") or "ended unexpectedly")
    if CONTEXT_EXCEEDED.search(reason):
        return context_exceeded(reason, param=param)
    return DoorError(f"generation failed: {reason}", status=502)


def context_exceeded(message: str, *, param: str) -> DoorError:
    """400 `context_length_exceeded`, with the worker's counts in OpenAI's words."""
    found = CONTEXT_EXCEEDED.search(message)
    assert found is not None
    tokens, holds = found.groups()
    return DoorError(
        f"This model's maximum context length is {holds} tokens, but the prompt is "
        f"{tokens} tokens; shorten the {param} or use a model with a larger context",
        status=400,
        param=param,
        code="context_length_exceeded",
    )


def generation_timeout(limit_s: float) -> DoorError:
    return DoorError(
        f"the generation did not finish within the queen's limit of {limit_s:g} s and was "
        "stopped; ask for fewer tokens (max_tokens) or raise the limit",
        status=504,
        retry=False,  # the same request would run as long again
    )
