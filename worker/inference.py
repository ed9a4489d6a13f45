"""Serving generations: `parallel` at once in the engine's slots, a few waiting, tokens
on each job's stream.

    POST /v1/inference {prompt | messages | tokens, max_tokens, temperature, top_p, top_k,
                        seed, stop, presence_penalty, frequency_penalty, logit_bias,
                        logprobs, n, echo, response_format, tools, tool_choice,
                        parallel_tool_calls}
        -> 201 {job_id, sse_url}   (followed and cancelled through the job API)

The worker's one door for generations: `POST /v1/jobs` refuses them (see `refuse_jobs`),
while `GET /v1/jobs/{id}/stream` and `DELETE /v1/jobs/{id}` serve the jobs made here.

`messages` are rendered into the prompt through the model's chat template (worker/chat.py)
before the job is made, so a conversation the template refuses is a 400; so is every
value the worker cannot honour (a token id beyond the vocabulary, `n` beyond its slots, a
JSON schema keyword the grammar would not enforce, `echo` with `logprobs`), each naming
its field. OpenAI's fields keep OpenAI's meaning: see worker/_sampler.py (penalties, bias,
grammar), worker/_grammar.py (response_format, forced tool calls), worker/chat.py (tools
in the prompt), worker/_logprobs.py; `n` choices share one evaluation of the prompt.

The job narrates `inference_start` once it has a slot, sends each piece of text as a
`token {t, i}` event (with `c`, its choice, when n > 1, and `lp`, its tokens' logprobs
entries, when asked), narrates `inference_complete` (prompt tokens, tokens generated:
llama tokens, not pieces of text; tok/s; time to first token) and ends `completed` with
`{tokens_out, prompt_tokens, decode_time_ms, first_token_ms, stop_reason, choices:
[{index, tokens_out, stop_reason}]}` as its result; a failure ends it `failed` with the
reason. The engine thread (worker/_slots.py) generates for every slot
in one batch per step; a request beyond the free slots waits, and when QUEUE_MAX are
already waiting, or the model is still loading, the answer is 503 with Retry-After.
Cancelling the job (DELETE, or the queen cancelling across the hop) stops its generation
within a step, or within a chunk of a long prompt's evaluation, and frees its slot. So
does its client going away without a word (a queen killed mid-stream): a job no stream
has read for UNREAD_STOP_S is cancelled, rather than generating up to `max_tokens` for
nobody, or waiting its turn.

A split whose RPC peer fails (`peer_lost`, from worker/_rpc.py's PeerWatch) can generate
no more: every job running or waiting fails at once with the sentence naming the peer,
and `gave_up` is set (the app then ends the worker).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobs import Infer, InvalidRequest, parse_operation
from jobs.server import Handler, Job, JobService, error_body
from narration_core import Narrator
from worker._grammar import grammar_parses, output_grammar, tool_function
from worker._slots import Order, Piece, SlotLoop, Started
from worker._wakeup import Wakeup
from worker.chat import render_chat
from worker.engine import Engine, Generation, Sampling

NARRATE = Narrator("llm-worker-rbee")
QUEUE_MAX = 4  # requests waiting for a slot before the worker answers 503
RETRY_AFTER_S = 1  # what a 503 tells the client to wait
# Infer fields that only make sense before a worker is chosen: refused here (422), never
# accepted and ignored.
NOT_HERE = frozenset({"operation", "model", "hive_id", "worker_id"})
UNREAD_STOP_S = 15.0  # a job no stream has read for this long is cancelled (client gone)
UNREAD_POLL_S = 1.0  # how often a job looks for its readers
CANCEL_WAIT_S = 10.0  # longest a cancelled job waits for the engine to free its slot (a
# step or a prompt chunk takes a fraction of that; more means the engine thread is stuck)


@dataclass(eq=False)
class _Waiter:
    """What a job waits on while the engine thread generates for its order."""

    job: Job
    started: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    slot: int | None = None
    outcome: Generation | Exception | None = None


class Inference:
    """The worker's generations: the `infer` handler, the POST /v1/inference route over the
    job service that runs it (`routes`), and the engine thread with the task that
    delivers its output (`running`, the app's lifespan)."""

    def __init__(self, engine: Engine, *, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name
        self._wakeup = Wakeup()
        self.slots = SlotLoop(engine, notify=self._wakeup.notify)
        self._waiters: dict[Order, _Waiter] = {}
        self.admitted = 0  # jobs made by the route and not yet ended
        self.fault: str | None = None  # why the model cannot be used any more (a split's)
        self.gave_up = anyio.Event()  # set once the jobs were failed with `fault`

    def statistics(self) -> dict[str, Any]:
        """/health's view: slots, busy ones, each slot's state, the context's shape."""
        slots = self.slots.statistics()
        return {
            "busy": self.admitted > 0,  # anything generating or waiting
            "waiting": max(0, self.admitted - slots["slots_busy"]),
            "queue_max": QUEUE_MAX,
            **self.engine.statistics(),
            **slots,
        }

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the engine thread and deliver what it makes, until the app stops."""
        thread_done = anyio.Event()

        async def engine_thread() -> None:
            try:
                await anyio.to_thread.run_sync(self.slots.run)
            finally:
                thread_done.set()

        async def deliver() -> None:
            while True:
                await self._wakeup.wait()
                self._deliver()
                if self.fault is not None and not self.gave_up.is_set():
                    self._fail_all(self.fault)

        async with anyio.create_task_group() as tg:
            tg.start_soon(engine_thread)
            tg.start_soon(deliver)
            try:
                yield
            finally:
                self.slots.close()  # the thread ends within a step, its orders cancelled
                with anyio.CancelScope(shield=True):
                    await thread_done.wait()
                self._deliver()
                tg.cancel_scope.cancel()
        self._wakeup.close()

    def peer_lost(self, reason: str) -> None:
        """A split's RPC peer failed (any thread): fail every job with `reason`."""
        self.fault = reason
        self._wakeup.notify()

    def _fail_all(self, reason: str) -> None:
        """End every job's wait with PeerLost: the engine thread may be stuck inside
        llama.cpp for ever (a frozen peer), so nothing it would send is waited for."""
        _fail(self._waiters.values(), reason)
        self.gave_up.set()

    def _deliver(self) -> None:
        """Hand the engine thread's output to the jobs waiting for it."""
        outbox = self.slots.outbox
        while outbox:
            order, outcome = outbox.popleft()
            waiter = self._waiters.get(order)
            if waiter is None:
                continue  # its job has ended already
            if isinstance(outcome, Piece):
                extra: dict[str, Any] = {}
                if order.n > 1:
                    extra["c"] = outcome.choice
                if outcome.logprobs is not None:
                    extra["lp"] = outcome.logprobs
                waiter.job.token(outcome.text, outcome.index, extra or None)
            elif isinstance(outcome, Started):
                waiter.slot = outcome.slot
                waiter.started.set()
            else:
                waiter.outcome = outcome
                waiter.started.set()
                waiter.done.set()

    async def infer(self, op: Infer, job: Job) -> dict[str, Any]:
        """The `infer` job: wait for a slot, generate, stream the pieces as tokens;
        cancelled once nobody reads it (see the module docstring)."""
        try:  # counted in `admitted` by the route that made the job
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_when_unread, job)
                result = await self._generate(op, job)
                tg.cancel_scope.cancel()
        finally:
            self.admitted -= 1
        return result

    async def _generate(self, op: Infer, job: Job) -> dict[str, Any]:
        if self.fault is not None:
            raise InvalidRequest(self.fault, status=503)
        if not self.engine.is_loaded:
            raise InvalidRequest("the model is not loaded yet; retry in a moment", status=503)
        if op.tokens is not None:
            tokens = list(op.tokens)
            echo = b"".join(self.engine.piece(t) for t in tokens).decode(errors="replace")
        else:
            tokens = await anyio.to_thread.run_sync(self.engine.tokenize, op.prompt)
            echo = op.prompt
        room = self.engine.ctx_size - len(tokens)
        if not tokens:
            raise ValueError("the prompt is empty and this model adds no start token; send text")
        if room < 1:
            raise ValueError(
                f"the prompt is {len(tokens)} tokens and this model's context holds "
                f"{self.engine.ctx_size} per slot; shorten the prompt"
            )
        sampling = Sampling(
            op.max_tokens,
            op.temperature,
            op.top_p,
            op.top_k,
            op.seed,
            op.stop,
            presence_penalty=op.presence_penalty,
            frequency_penalty=op.frequency_penalty,
            logit_bias=tuple((int(t), b) for t, b in op.logit_bias.items()),
            grammar=output_grammar(op),
            logprobs=op.logprobs,
        )
        limit = min(op.max_tokens, room)
        order = Order(tokens, sampling, limit, n=op.n, echo=echo if op.echo else None)
        waiter = self._waiters[order] = _Waiter(job)
        self.slots.submit(order)
        try:
            await waiter.started.wait()
            if waiter.slot is not None:
                NARRATE.action("inference_start").target(job.id).human(
                    f"Generating up to {op.max_tokens} tokens with {self.model_name} "
                    f"(slot {waiter.slot}, {len(tokens)} prompt tokens"
                    f"{f', {op.n} choices' if op.n > 1 else ''})"
                ).field("slot", waiter.slot).emit()
            await waiter.done.wait()
        finally:
            if not waiter.done.is_set() and self.fault is None:  # cancelled: free the slot
                self.slots.cancel(order)
                with anyio.move_on_after(CANCEL_WAIT_S, shield=True):
                    await waiter.done.wait()
            del self._waiters[order]
        if isinstance(waiter.outcome, Exception):
            raise waiter.outcome
        assert isinstance(waiter.outcome, Generation)
        return self._complete(job, waiter.outcome)

    def _complete(self, job: Job, result: Generation) -> dict[str, Any]:
        rate = result.tokens_out / max(result.decode_time_ms / 1000, 1e-9)
        ttft = (
            "" if result.first_token_ms is None else f", first after {result.first_token_ms:.0f} ms"
        )
        NARRATE.action("inference_complete").target(job.id).human(
            f"{result.tokens_out} tokens in {result.decode_time_ms:.0f} ms ({rate:.0f} tok/s"
            f"{ttft}) from a {result.prompt_tokens}-token prompt; {result.stop_reason}"
        ).field("prompt_tokens", result.prompt_tokens).field("tokens_out", result.tokens_out).field(
            "tok_per_s", round(rate, 1)
        ).emit()
        return {
            "tokens_out": result.tokens_out,
            "prompt_tokens": result.prompt_tokens,
            "decode_time_ms": result.decode_time_ms,
            "first_token_ms": result.first_token_ms,
            "stop_reason": result.stop_reason,
            "choices": [
                {"index": c.index, "tokens_out": c.tokens_out, "stop_reason": c.stop_reason}
                for c in result.choices
            ],
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
        if self.fault is not None:
            return _unavailable(self.fault)
        if not self.engine.is_loaded:
            return _unavailable("the model is still loading; retry shortly")
        if self.admitted >= self.engine.parallel + QUEUE_MAX:
            return _unavailable(
                f"this worker is busy (all {self.engine.parallel} slots generating and "
                f"{QUEUE_MAX} requests waiting); retry shortly"
            )
        try:
            fields = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            fields = None
        if not isinstance(fields, dict):
            raise InvalidRequest("the body must be a JSON object with a prompt", status=400)
        if foreign := sorted(NOT_HERE & fields.keys()):
            raise InvalidRequest(
                f"{', '.join(foreign)} cannot be chosen at a worker, which serves "
                f"{self.model_name} itself; leave {' and '.join(foreign)} out",
                detail={"fields": foreign},
            )
        op = parse_operation({**fields, "operation": "infer", "model": self.model_name})
        if isinstance(op, Infer):  # refused here: a 400, not a job
            self._check(op)
            if op.messages is not None:
                tools = None if op.tool_choice == "none" else op.tools
                prompt = render_chat(op.messages, self.engine.chat_template, tools)
                op = op.model_copy(update={"prompt": prompt, "messages": None})
        job = await service.submit(op)
        # Counted from here (its task has not run yet), so a burst sees the queue fill.
        self.admitted += 1
        body = {"job_id": job.id, "sse_url": f"/v1/jobs/{job.id}/stream"}
        return JSONResponse(body, status_code=201)

    def _check(self, op: Infer) -> None:
        """Raise InvalidRequest (400, naming the field) for what this worker cannot honour."""
        n_vocab, slots = self.engine.n_vocab, self.engine.parallel
        if op.n > slots:
            _refuse("n", f"n is {op.n} but this worker has {slots} slots; ask for at most {slots}")
        if op.echo and op.logprobs is not None:
            _refuse("echo", "echo with logprobs is not supported; leave one of them out")
        if op.tokens is not None and (bad := [t for t in op.tokens if not 0 <= t < n_vocab]):
            _refuse(
                "tokens", f"tokens holds {bad[0]}, not a token id of this model (0..{n_vocab - 1})"
            )
        if bad_bias := [t for t in op.logit_bias if int(t) >= n_vocab]:
            _refuse(
                "logit_bias",
                f"logit_bias names token {bad_bias[0]}, beyond this model's {n_vocab} tokens",
            )
        for i, tool in enumerate(op.tools or ()):  # rendered or forced: each must be whole
            tool_function(tool, i, constrained=False)
        if op.tools and op.messages is None:
            _refuse("tools", "tools are rendered into a chat: send messages, not a prompt")
        grammar = output_grammar(op)
        if grammar is not None and not grammar_parses(self.engine.vocab, grammar):
            _refuse(
                "response_format", "the grammar made from the schema does not parse; simplify it"
            )


def _fail(waiters: Iterable[_Waiter], reason: str) -> None:
    from worker._rpc import PeerLost

    for waiter in waiters:
        waiter.outcome = PeerLost(reason)
        waiter.started.set()
        waiter.done.set()


def _refuse(field: str, message: str) -> None:
    raise InvalidRequest(message, status=400, detail={"field": field})


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
