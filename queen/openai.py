"""The queen's OpenAI-compatible door: OpenAI clients run prompts on rbee workers.

    POST /v1/chat/completions   POST /v1/completions   (stream or not)   GET /v1/models

Each request becomes an ordinary `infer` job on the queen (so `keeper jobs list` shows
it, with the worker's narration in its log); the door reads the job's tokens and answers
in OpenAI's shapes: JSON, or SSE frames `data: {chunk}` ending with `data: [DONE]` (no
`id:`/`event:` lines: these frames are not the job stream's). A client that goes away
cancels the job, which cancels the worker's generation. Errors use OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`.

Chat messages travel as `messages` in the infer job, and the worker that takes it renders
them through its model's chat template (worker/chat.py; a model without one gets the
`<|role|>` format builtin:tiny carries), as for `keeper infer`. Sampling fields the
client leaves out take the `infer` defaults (temperature 0.7, top_p 0.95, top_k 40, 128
tokens); `top_k` is accepted as an extension. See docs/api.md.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from jobs import (
    MAX_TOKENS_LIMIT,
    TEMPERATURE_MAX,
    TEXT_MAX_CHARS,
    TOP_K_MIN,
    TOP_P_MAX,
    ChatMessage,
    Infer,
    JobError,
)
from jobs.server import JobService, ready_unless_hung_up, until_hung_up
from queen.infer import WorkerPool, catalog_names

BUILTIN_MODELS = ("builtin:smollm2", "builtin:tiny")  # always listed: any hive can make them
CATALOG_TIMEOUT_S = 3.0  # asking the hives for their catalogs (GET /v1/models)
OWNER = "rbee"


class _Body(BaseModel):
    # OpenAI clients send fields rbee has no use for (user, n=1, logprobs=None): ignored.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=TEXT_MAX_CHARS)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0, le=TEMPERATURE_MAX)
    top_p: float | None = Field(default=None, gt=0, le=TOP_P_MAX)
    top_k: int | None = Field(default=None, ge=TOP_K_MIN)
    seed: int | None = None
    stop: str | list[str] | None = None

    def infer(self, prompt: str = "", messages: list[ChatMessage] | None = None) -> Infer:
        fields: dict[str, Any] = {
            "messages": messages,
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": [self.stop] if isinstance(self.stop, str) else self.stop,
        }
        given = {k: v for k, v in fields.items() if v is not None}
        try:
            return Infer(prompt=prompt, model=self.model, **given)
        except ValidationError as exc:
            raise _invalid(exc) from None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The content as text: parts of type `text` joined (images are not supported)."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)


class CompletionBody(_Body):
    prompt: str | list[str]

    def text(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise DoorError("send one prompt per request", param="prompt")
            return self.prompt[0]
        return self.prompt


class DoorError(Exception):
    """A request the door answers with OpenAI's error shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        kind: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.param = param

    def response(self) -> JSONResponse:
        body = {"error": {"message": str(self), "type": self.kind, "param": self.param}}
        body["error"]["code"] = None
        return JSONResponse(body, status_code=self.status)


class OpenAIDoor:
    """The routes, over the queen's job service: each request is an `infer` job."""

    def __init__(self, pool: WorkerPool, service: JobService) -> None:
        self.pool = pool
        self.service = service

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
        ]

    async def models(self, request: Request) -> Response:
        names = set(BUILTIN_MODELS) | self.pool.model_names()
        with anyio.move_on_after(CATALOG_TIMEOUT_S):
            names |= await catalog_names(self.pool.hives)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": OWNER}
            for name in sorted(names)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Request) -> Response:
        try:
            body = _parse(ChatBody, await request.body())
            op = body.infer(
                messages=[ChatMessage(role=m.role, content=m.text()) for m in body.messages]
            )
            return await self._answer(request, op, body.stream, chat=True)
        except DoorError as exc:
            return exc.response()

    async def completions(self, request: Request) -> Response:
        try:
            body = _parse(CompletionBody, await request.body())
            return await self._answer(request, body.infer(body.text()), body.stream, chat=False)
        except DoorError as exc:
            return exc.response()

    async def _answer(self, request: Request, op: Infer, stream: bool, *, chat: bool) -> Response:
        service = self.service
        job = await service.submit(op)
        # Until a worker took the prompt, or the job failed before that; a client that
        # left meanwhile (a first request's model fetch) has its job stopped here.
        if not await ready_unless_hung_up(job, request, within=None):
            await self._cancel(job.id)
            return Response(status_code=499)  # nginx's "client closed request"; unread
        if job.error is not None:
            raise _door_error(job.error)
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{job.id}"
        shape = _Shape(ident, op.model, chat)
        if stream:
            return StreamingResponse(
                self._frames(job.id, shape),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store"},
            )
        text: list[str] = []
        final: dict[str, Any] = {}

        async def collect() -> None:
            nonlocal final
            async for kind, data in self._events(job.id):
                if kind == "token":
                    text.append(str(data.get("t", "")))
                else:
                    final = data

        try:  # a client that leaves before the answer stops the generation it waits for
            if not await until_hung_up(request, collect, within=None):
                return Response(status_code=499)  # unread, as above
        finally:
            await self._cancel(job.id)
        _check_final(final)
        return JSONResponse(shape.whole("".join(text), _finish(final)))

    async def _frames(self, job_id: str, shape: _Shape) -> AsyncIterator[bytes]:
        """The streamed answer; leaving early (the client went away) cancels the job."""
        try:
            if shape.chat:
                yield _frame(shape.chunk(None, None, role=True))
            final: dict[str, Any] = {}
            async for kind, data in self._events(job_id):
                if kind == "token":
                    yield _frame(shape.chunk(str(data.get("t", "")), None))
                else:
                    final = data
            try:
                _check_final(final)
            except DoorError as exc:
                yield _frame({"error": {"message": str(exc), "type": exc.kind, "code": None}})
            else:
                yield _frame(shape.chunk(None, _finish(final)))
            yield b"data: [DONE]\n\n"
        finally:
            with anyio.CancelScope(shield=True):
                await self._cancel(job_id)

    async def _events(self, job_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The job's tokens, then its final state: ("token", {t, i}) ... ("state", {...})."""
        reader = await self.service.reader(job_id, 0)
        try:
            while True:
                for entry in await reader.take():
                    if entry.kind == "token":
                        yield "token", json.loads(entry.data_json)
                    elif entry.kind == "state":
                        data = json.loads(entry.data_json)
                        if data.get("state") in ("completed", "failed", "cancelled"):
                            yield "state", data
                if reader.at_end():
                    return
                await reader.wait()
        finally:
            reader.close()

    async def _cancel(self, job_id: str) -> None:
        with contextlib.suppress(JobError):  # JobFinished: it ended, nothing to stop
            await self.service.cancel(job_id)


class _Shape:
    """OpenAI's response objects for one request."""

    def __init__(self, ident: str, model: str, chat: bool) -> None:
        self.ident = ident
        self.model = model
        self.chat = chat
        self.created = int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.ident, "object": obj, "created": self.created, "model": self.model}

    def chunk(self, text: str | None, finish: str | None, *, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {**self._head("text_completion"), "choices": [choice]}

    def whole(self, text: str, finish: str) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return {**self._head("chat.completion"), "choices": [choice]}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {**self._head("text_completion"), "choices": [choice]}


def _parse(model: type[ChatBody] | type[CompletionBody], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> DoorError:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return DoorError(f"{where}: {first.get('msg', 'invalid')}", param=where)


def _door_error(error: BaseException) -> DoorError:
    status = getattr(error, "status", 500)
    status = status if isinstance(status, int) and 400 <= status < 600 else 500
    kind: Literal["invalid_request_error", "server_error"] = (
        "invalid_request_error" if status < 500 else "server_error"
    )
    return DoorError(str(error), status=status, kind=kind)


def _check_final(final: dict[str, Any]) -> None:
    state = final.get("state")
    if state == "completed":
        return
    reason = final.get("error") or ("cancelled" if state == "cancelled" else "ended unexpectedly")
    raise DoorError(f"generation failed: {reason}", status=502, kind="server_error")


def _finish(final: dict[str, Any]) -> str:
    """OpenAI's finish_reason: `length` when max_tokens cut it, else `stop`."""
    result = final.get("result") or {}
    return "length" if result.get("stop_reason") == "length" else "stop"


def _frame(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
