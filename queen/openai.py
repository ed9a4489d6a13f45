"""The queen's OpenAI-compatible door: OpenAI clients run prompts on rbee workers.

    POST /v1/chat/completions   POST /v1/completions   (stream or not)
    GET  /v1/models             GET  /v1/models/{id}

Each request becomes an ordinary `infer` job on the queen (so `keeper jobs list` shows
it, with the worker's narration in its log); the door reads the job's tokens and answers
in OpenAI's shapes: JSON, or SSE frames `data: {chunk}` ending with `data: [DONE]` (no
`id:`/`event:` lines: these frames are not the job stream's). Errors use OpenAI's shape
and statuses (queen._openai_errors): a model nobody has is a 404 before any job runs, a
prompt over the context a 400, never a 5xx for the caller's mistake.

A request lasts as long as its client wants it: one that goes away cancels the job, and
so the worker's generation. Besides that, only the generation limit bounds it
(GENERATION_TIMEOUT_S, from the moment a worker took the prompt); the wait for a worker
is the client's to cut. The job server's body-read deadline covers the body alone.

Chat messages travel as `messages` in the infer job, and the worker that takes it renders
them through its model's chat template (worker/chat.py), as for `keeper infer`. Every
request field is mapped to the job, refused with a 400 naming it, or inert
(queen._openai_wire); sampling fields the client leaves out take the `infer` defaults. A
completion listing several prompts runs one job per prompt, side by side, and answers
their choices prompt-major. The answer is built choice by choice (queen._openai_answers):
tool calls parsed from the text (queen._openai_tools), logprobs in OpenAI's two shapes
(queen._openai_logprobs), usage summed from the workers' counts. See docs/api.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from jobs import JobError
from jobs.server import Job, JobService, ready_unless_hung_up, until_hung_up
from queen._openai_answers import Choice, Shape, frame, stop_reason, usage
from queen._openai_embeddings import Embeddings
from queen._openai_errors import (
    DoorError,
    from_failed_job,
    from_job_error,
    generation_timeout,
    model_not_found,
    openai_error,
)
from queen._openai_schema import OPENAPI_PATHS
from queen._openai_wire import ChatBody, CompletionBody, Message, Plan, parse
from queen.infer import WorkerPool, catalog_names
from queen.metrics import QueenMetrics
from queen.settings import GENERATION_TIMEOUT_S

__all__ = [
    "BUILTIN_MODELS",
    "DOOR_PREFIXES",
    "GENERATION_TIMEOUT_S",
    "OPENAPI_PATHS",
    "Message",
    "OpenAIDoor",
    "openai_error",
]

BUILTIN_MODELS = ("builtin:smollm2", "builtin:tiny")  # always listed: any hive can make them
FETCHABLE_PREFIXES = ("hf:", "http://", "https://")  # refs a hive downloads (hive/catalog.py)
CATALOG_TIMEOUT_S = 3.0  # asking the hives for their catalogs (GET /v1/models, model checks)
OWNER = "rbee"
DOOR_PREFIXES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
)  # OpenAI-shaped
ENDED = ("completed", "failed", "cancelled")
DONE = b"data: [DONE]\n\n"

Event = tuple[str, dict[str, Any]]  # ("token", {t, i}) or ("end", the job's final state)


class OpenAIDoor:
    """The routes, over the queen's job service: each request is an `infer` job."""

    def __init__(
        self,
        pool: WorkerPool,
        service: JobService,
        *,
        metrics: QueenMetrics,
        generation_timeout_s: float | None = GENERATION_TIMEOUT_S,
    ) -> None:
        self.pool = pool
        self.service = service
        self.metrics = metrics
        self.generation_timeout_s = generation_timeout_s

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.model, methods=["GET"]),
            *Embeddings(self).routes(),  # POST /v1/embeddings (queen/_openai_embeddings.py)
        ]

    async def models(self, request: Request) -> Response:
        data = [_model(name) for name in sorted(await self._names())]
        self.metrics.request_done("/v1/models", 200)
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        known = name in await self._names()
        self.metrics.request_done("/v1/models/{model}", 200 if known else 404)
        return JSONResponse(_model(name)) if known else model_not_found(name).response()

    async def chat(self, request: Request) -> Response:
        return await self._serve(request, ChatBody, route="/v1/chat/completions")

    async def completions(self, request: Request) -> Response:
        return await self._serve(request, CompletionBody, route="/v1/completions")

    async def _serve(
        self, request: Request, kind: type[ChatBody] | type[CompletionBody], *, route: str
    ) -> Response:
        started = time.perf_counter()
        try:
            body = parse(kind, await request.body())
            plan = body.plan()
            await self.check_model(plan.ops[0].model)
            response = await self._answer(request, body, plan, started)
        except DoorError as exc:
            self._note(exc)
            response = exc.response()
        self.metrics.request_done(route, response.status_code)
        return response

    async def check_model(self, model: str) -> None:
        """Raise 404 `model_not_found` for a model no worker has, no hive has in its
        catalog, and no hive could fetch: it would only fail later, as a 5xx."""
        fetchable = model.startswith(FETCHABLE_PREFIXES) or model.endswith(".gguf")
        if fetchable or model in BUILTIN_MODELS or model in self.pool.model_names():
            return
        if model not in await self._catalog():
            raise model_not_found(model)

    async def _names(self) -> set[str]:
        return set(BUILTIN_MODELS) | self.pool.model_names() | await self._catalog()

    async def _catalog(self) -> set[str]:
        with anyio.move_on_after(CATALOG_TIMEOUT_S):
            return await catalog_names(self.pool.hives)
        return set()

    async def _answer(
        self, request: Request, body: ChatBody | CompletionBody, plan: Plan, started: float
    ) -> Response:
        """One job per prompt, submitted together (they run side by side on the workers)
        and read in turn; the answer waits until every one has a worker."""
        param = "messages" if plan.chat else "prompt"
        jobs: list[Job] = []
        ids: list[str] = []
        try:  # a submit that fails cancels the prompts submitted before it
            for op in plan.ops:
                jobs.append(await self.service.submit(op))
                ids.append(jobs[-1].id)
            for job in jobs:
                # Until a worker took the prompt, or the job failed before that; a client
                # that left meanwhile (a first request's model fetch) has its jobs stopped.
                with self.metrics.waiting():
                    ready = await ready_unless_hung_up(job, request, within=None)
                if not ready:
                    await self._cancel(*ids)
                    return Response(status_code=499)  # nginx's "client closed request"
                if job.error is not None:
                    raise from_job_error(job.error, param=param)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._cancel(*ids)
            raise
        model = plan.ops[0].model
        runs = [_Run(self, job.id, model, started) for job in jobs]
        shape = Shape(f"{'chatcmpl' if plan.chat else 'cmpl'}-{jobs[0].id}", model, plan.chat)
        answer = _Answer(plan, runs, param)
        if body.stream:
            return await self._stream(request, answer, shape, with_usage=body.include_usage)

        async def collect() -> None:
            for run in runs:
                async for kind, data in run.events():
                    if kind == "token":
                        answer.choice(run, data).piece(data)
                answer.results.append(run.result(param))

        try:  # a client that leaves before the answer stops the generation it waits for
            if not await until_hung_up(request, collect, within=None):
                return Response(status_code=499)  # unread, as above
        finally:
            await self._cancel(*ids)
        return JSONResponse(shape.whole(answer.whole(), usage(answer.results)))

    async def _stream(
        self, request: Request, answer: _Answer, shape: Shape, *, with_usage: bool
    ) -> Response:
        """Waits for the first token (or the end) before answering 200, so a prompt the
        worker refuses (longer than its context) is an HTTP error, not a broken stream."""
        run = answer.runs[0]
        events = run.events()
        first: Event | None = None

        async def peek() -> None:
            nonlocal first
            first = await anext(events, None)

        try:
            hung_up = not await until_hung_up(request, peek, within=None)
            if not hung_up and (first is None or first[0] != "token"):
                run.result(answer.param)  # raises for a failure; else an answer without tokens
        except BaseException:
            with anyio.CancelScope(shield=True):
                await events.aclose()
                await self._cancel(*answer.ids)
            raise
        if hung_up:
            await events.aclose()
            await self._cancel(*answer.ids)
            return Response(status_code=499)  # unread, as above
        return StreamingResponse(
            self._frames(answer, shape, first, events, with_usage=with_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )

    async def _frames(
        self,
        answer: _Answer,
        shape: Shape,
        first: Event | None,
        events: AsyncGenerator[Event],
        *,
        with_usage: bool,
    ) -> AsyncIterator[bytes]:
        """The streamed answer, job after job; leaving early (the client went away)
        cancels the jobs."""
        opened = [events]
        try:
            if shape.chat:
                for index in range(len(answer.choices)):
                    yield frame(shape.chunk(index, {"role": "assistant", "content": ""}))
            for number, run in enumerate(answer.runs):
                if number:
                    opened.append(run.events())
                    first = await anext(opened[-1], None)
                event = first
                while event is not None and event[0] == "token":
                    choice = answer.choice(run, event[1])
                    text, logprobs = choice.piece(event[1])
                    if text or logprobs is not None:
                        yield frame(shape.content(choice.index, text, logprobs))
                    event = await anext(opened[-1], None)
                result = run.result(answer.param)
                answer.results.append(result)
                for choice, reason in answer.ending(run, result):
                    rest, finish = choice.end(reason)
                    if rest:
                        yield frame(shape.content(choice.index, rest, None))
                    if choice.calls:
                        yield frame(shape.calls(choice.index, choice.calls))
                    yield frame(shape.finish(choice.index, finish))
            if with_usage:
                yield frame(shape.usage_chunk(usage(answer.results)))
            yield DONE
        except DoorError as exc:
            self._note(exc)
            yield frame(exc.body())
            yield DONE
        finally:
            with anyio.CancelScope(shield=True):
                for opened_events in opened:
                    await opened_events.aclose()
                await self._cancel(*answer.ids)

    def _note(self, exc: DoorError) -> None:
        """Count a failure on rbee's side (the caller's mistakes are not failures)."""
        if exc.status >= 500:
            self.metrics.failed(exc.code or "server_error")

    async def _cancel(self, *job_ids: str) -> None:
        for job_id in job_ids:
            with contextlib.suppress(JobError):  # JobFinished: it ended, nothing to stop
                await self.service.cancel(job_id)


class _Answer:
    """The choices of one request's jobs: prompt p's choice c is choice `p * n + c`."""

    def __init__(self, plan: Plan, runs: list[_Run], param: str) -> None:
        self.plan = plan
        self.runs = runs
        self.param = param
        self.ids = [run.job_id for run in runs]
        self.choices = [
            Choice(index, chat=plan.chat, logprobs=plan.logprobs, tools=plan.tools)
            for index in range(len(runs) * plan.n)
        ]
        self.results: list[dict[str, Any]] = []

    def choice(self, run: _Run, data: dict[str, Any]) -> Choice:
        """The choice a token event of `run` belongs to (`c`: its index in the job)."""
        within = data.get("c", 0)
        within = within if isinstance(within, int) and 0 <= within < self.plan.n else 0
        return self.choices[self.runs.index(run) * self.plan.n + within]

    def ending(self, run: _Run, result: dict[str, Any]) -> list[tuple[Choice, str]]:
        """`run`'s choices with the finish_reason its worker gave each."""
        base = self.runs.index(run) * self.plan.n
        return [(self.choices[base + c], stop_reason(result, c)) for c in range(self.plan.n)]

    def whole(self) -> list[dict[str, Any]]:
        """Every choice of a whole answer, once every job ended."""
        return [
            choice.whole(reason)
            for run, result in zip(self.runs, self.results, strict=True)
            for choice, reason in self.ending(run, result)
        ]


class _Run:
    """One generation as the door follows it: its job's events, timed for the metrics,
    ended by the generation limit (counted from here: a worker has taken the prompt)."""

    def __init__(self, door: OpenAIDoor, job_id: str, model: str, started: float) -> None:
        self.door = door
        self.job_id = job_id
        self.model = model
        self.started = started
        limit = door.generation_timeout_s
        self.deadline = math.inf if limit is None else anyio.current_time() + limit
        self.final: dict[str, Any] = {}
        self.timed_out = False

    async def events(self) -> AsyncGenerator[Event]:
        """The job's tokens, then ("end", its final state); stops early at the limit."""
        metrics = self.door.metrics
        reader = await self.door.service.reader(self.job_id, 0)
        first = True
        try:
            while True:
                for entry in await reader.take():
                    if entry.kind == "token":
                        if first:
                            metrics.first_token(self.model, time.perf_counter() - self.started)
                            first = False
                        yield "token", json.loads(entry.data_json)
                    elif entry.kind == "state":
                        data = json.loads(entry.data_json)
                        if data.get("state") in ENDED:
                            self._ended(data)
                            yield "end", data
                            return
                if reader.at_end():
                    return
                with anyio.move_on_after(self.deadline - anyio.current_time()):
                    await reader.wait()
                if anyio.current_time() >= self.deadline:
                    self.timed_out = True
                    return
        finally:
            reader.close()

    def _ended(self, final: dict[str, Any]) -> None:
        self.final = final
        if final.get("state") == "completed":
            result = final.get("result") or {}
            prompt = result.get("prompt_tokens")
            self.door.metrics.finished(
                self.model,
                time.perf_counter() - self.started,
                tokens=int(result.get("tokens_out") or 0),
                prompt_tokens=prompt if isinstance(prompt, int) else None,
            )

    def result(self, param: str) -> dict[str, Any]:
        """The completed job's result; raises DoorError when it failed, was cancelled or
        ran past the generation limit."""
        if self.timed_out:
            raise generation_timeout(self.door.generation_timeout_s or math.inf)
        if self.final.get("state") != "completed":
            raise from_failed_job(self.final, param=param)
        result: dict[str, Any] = self.final.get("result") or {}
        return result


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNER}
