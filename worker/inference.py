"""Serving generations: one at a time, a few waiting, tokens on the job's stream.

    POST /v1/inference {prompt | messages, max_tokens, temperature, top_p, top_k, seed, stop}
        -> 201 {job_id, sse_url}   (followed and cancelled through the job API)

The worker's one door for generations: `POST /v1/jobs` refuses them (see `refuse_jobs`),
while `GET /v1/jobs/{id}/stream` and `DELETE /v1/jobs/{id}` serve the jobs made here.

`messages` are rendered into the prompt through the model's chat template (worker/chat.py)
before the job is made, so a conversation the template refuses is a 400.

The job narrates `inference_start`, sends each piece of text as a `token {t, i}` event,
narrates `inference_complete` (tokens generated: llama tokens, not pieces of text; tok/s;
time to first token) and ends `completed` with `{tokens_out,
decode_time_ms, first_token_ms, stop_reason}` as its result; a failure ends it `failed`
with the reason. A llama.cpp context serves one generation at a time, so requests queue;
when QUEUE_MAX are already waiting, or the model is still loading, the answer is 503 with
Retry-After. Cancelling the job (DELETE, or the queen cancelling across the hop) stops
generation within a token, or within a chunk of a long prompt's evaluation (a fraction of
a second, see worker/engine.py), and the next request starts. So does its client going
away without a word (a queen killed mid-stream): a job no stream has read for
UNREAD_STOP_S is cancelled, rather than generating up to `max_tokens` for nobody, or
waiting its turn.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import anyio.lowlevel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobs import Infer, InvalidRequest, parse_operation
from jobs.server import Handler, Job, JobService, error_body
from narration_core import Narrator
from worker.chat import render_chat
from worker.engine import Engine, Sampling, generate

NARRATE = Narrator("llm-worker-rbee")
QUEUE_MAX = 4  # requests waiting behind the running one before the worker answers 503
RETRY_AFTER_S = 1  # what a 503 tells the client to wait
UNREAD_STOP_S = 15.0  # a job no stream has read for this long is cancelled (client gone)
UNREAD_POLL_S = 1.0  # how often a job looks for its readers


class Inference:
    """The worker's generations: the `infer` handler, and the POST /v1/inference route
    over the job service that runs it (`routes`)."""

    def __init__(self, engine: Engine, *, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name
        self._lock = anyio.Lock()
        self.waiting = 0  # requests admitted and not yet generating
        self.busy = False

    def statistics(self) -> dict[str, Any]:
        return {"busy": self.busy, "waiting": self.waiting, "queue_max": QUEUE_MAX}

    async def infer(self, op: Infer, job: Job) -> dict[str, Any]:
        """The `infer` job: wait for the model, generate, stream the pieces as tokens;
        cancelled once nobody reads it (see the module docstring)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_when_unread, job)
            result = await self._infer(op, job)
            tg.cancel_scope.cancel()
        return result

    async def _infer(self, op: Infer, job: Job) -> dict[str, Any]:
        try:  # counted in `waiting` by the route that made the job
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        try:
            self.busy = True
            return await self._generate(op, job)
        finally:
            self.busy = False
            self._lock.release()

    async def _generate(self, op: Infer, job: Job) -> dict[str, Any]:
        llama = self.engine.llama
        if llama is None:
            raise InvalidRequest("the model is not loaded yet; retry in a moment", status=503)
        sampling = Sampling(op.max_tokens, op.temperature, op.top_p, op.top_k, op.seed, op.stop)
        NARRATE.action("inference_start").target(job.id).human(
            f"Generating up to {op.max_tokens} tokens with {self.model_name}"
        ).emit()
        stop = threading.Event()

        def emit(text: str, index: int) -> None:
            anyio.from_thread.run_sync(job.token, text, index)

        async def stop_when_cancelled() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                stop.set()  # the thread sees it before its next token or prompt chunk

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_cancelled)
            # Not abandoned on cancel: the thread must finish (within a token or a prompt
            # chunk, see `stop`) before the next generation may use the llama.cpp context.
            result = await anyio.to_thread.run_sync(
                lambda: generate(llama, op.prompt, sampling, emit=emit, should_stop=stop.is_set)
            )
            tg.cancel_scope.cancel()
        # The thread's wait is shielded; a cancel that stopped it is delivered here.
        await anyio.lowlevel.checkpoint()
        rate = result.tokens_out / max(result.decode_time_ms / 1000, 1e-9)
        ttft = (
            "" if result.first_token_ms is None else f", first after {result.first_token_ms:.0f} ms"
        )
        NARRATE.action("inference_complete").target(job.id).human(
            f"{result.tokens_out} tokens in {result.decode_time_ms:.0f} ms ({rate:.0f} tok/s"
            f"{ttft}); {result.stop_reason}"
        ).field("tokens_out", result.tokens_out).field("tok_per_s", round(rate, 1)).emit()
        return {
            "tokens_out": result.tokens_out,
            "decode_time_ms": result.decode_time_ms,
            "first_token_ms": result.first_token_ms,
            "stop_reason": result.stop_reason,
        }

    def handlers(self) -> dict[str, Handler]:
        """The job server's handlers: `infer`, run for the jobs the route makes."""
        return {"infer": self.infer}

    def routes(self, service: JobService) -> list[BaseRoute]:
        """POST /v1/inference over `service`, and POST /v1/jobs refused (one door)."""

        async def inference(request: Request) -> Response:
            return await self._submit(request, service)

        return [
            Route("/v1/inference", inference, methods=["POST"]),
            Route("/v1/jobs", refuse_jobs, methods=["POST"]),
        ]

    async def _submit(self, request: Request, service: JobService) -> Response:
        """POST /v1/inference: the `infer` fields without `operation` and `model`."""
        if self.engine.llama is None:
            return _unavailable("the model is still loading; retry shortly")
        if self.waiting >= QUEUE_MAX:
            return _unavailable(
                f"this worker is busy ({QUEUE_MAX} requests already waiting); retry shortly"
            )
        try:
            fields = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            fields = None
        if not isinstance(fields, dict):
            raise InvalidRequest("the body must be a JSON object with a prompt", status=400)
        op = parse_operation({**fields, "operation": "infer", "model": self.model_name})
        if isinstance(op, Infer) and op.messages is not None:  # refused here: a 400, not a job
            prompt = render_chat(op.messages, self.engine.chat_template)
            op = op.model_copy(update={"prompt": prompt, "messages": None})
        job = await service.submit(op)
        # Counted from here (its task has not run yet), so a burst sees the queue fill.
        self.waiting += 1
        body = {"job_id": job.id, "sse_url": f"/v1/jobs/{job.id}/stream"}
        return JSONResponse(body, status_code=201)


async def _cancel_when_unread(job: Job) -> None:
    """Cancel `job` once no stream has read it for UNREAD_STOP_S."""
    while job.log.unread_for() <= UNREAD_STOP_S:  # noqa: ASYNC110 - readers come and go unsignalled
        await anyio.sleep(UNREAD_POLL_S)
    NARRATE.action("inference_unread").target(job.id).level("warn").human(
        f"Nobody has read job {job.id} for {UNREAD_STOP_S:g} s (its client went away); "
        "cancelling it"
    ).emit()
    job.cancel_scope.cancel()


async def refuse_jobs(request: Request) -> Response:
    """POST /v1/jobs on a worker: generations come in through POST /v1/inference only, so
    the queue counts one door; the job API still follows and cancels what it made."""
    return JSONResponse(
        error_body(
            "this worker takes generations at POST /v1/inference, not POST /v1/jobs",
            {"use": "POST /v1/inference"},
        ),
        status_code=405,
        headers={"Allow": "GET"},
    )


def _unavailable(message: str) -> Response:
    return JSONResponse(
        error_body(message), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
    )
