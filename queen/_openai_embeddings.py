"""The OpenAI door's `POST /v1/embeddings`: vectors from a worker of the model.

    POST /v1/embeddings {input, model, encoding_format?, dimensions?, user?}
        -> {object: "list", data: [{object: "embedding", index, embedding}], model, usage}

`input` is a string, a list of strings, a list of token ids or a list of such lists, as
OpenAI takes it. The worker is found, queued for or started exactly as for a completion
(`WorkerPool.admit`: its model's queue, its provisioning), and holds one of its slots while
it embeds; the inputs go to its `POST /v1/embeddings` (worker/_embeddings.py) CHUNK_INPUTS
at a time, which it evaluates in one batch, so a client that goes away stops the work
within a chunk. Vectors have unit length, as OpenAI's; `encoding_format: "base64"` sends
each as the base64 of its little-endian float32 values (what the official clients ask for
and decode). `dimensions` is refused (400) unless it is the model's own size: llama.cpp's
models cannot shorten their vectors. `user` is accepted and unused, as OpenAI's is inert
for the answer. Errors are OpenAI's shape and statuses (queen._openai_errors).

No job in the queen's table stands for an embedding request (the job vocabulary has no
embeddings operation): the admission and provisioning it shares with completions narrate
into a log of its own, kept for the request's life.
"""

from __future__ import annotations

import base64
import math
import secrets
import struct
import time
from typing import Annotated, Any, Literal, Protocol

import anyio
import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobs import Infer, JobError
from jobs.client import tls_for
from jobs.server import Job, JobLog, until_hung_up
from queen._openai_errors import DoorError, from_job_error, generation_timeout
from queen._openai_wire import invalid
from queen._workers import Pick
from queen.infer import UNAVAILABLE_RETRY_S, UNAVAILABLE_WAIT_S, WorkerPool
from queen.metrics import QueenMetrics


class Door(Protocol):
    """What this route uses of the OpenAI door (queen.openai.OpenAIDoor), which builds it:
    its worker pool, its metrics, its generation limit and its model check."""

    pool: WorkerPool
    metrics: QueenMetrics
    generation_timeout_s: float | None

    async def check_model(self, model: str) -> None: ...


ROUTE = "/v1/embeddings"
WORKER_PATH = "/v1/embeddings"  # the worker's route (worker/_embeddings.py)
CHUNK_INPUTS = 16  # inputs per POST to the worker: one batch of its embedding context
CONNECT_TIMEOUT_S = 10.0  # reaching the worker (its answer is bounded by the generation limit)
MAX_INPUTS = 2048  # inputs one request may hold (OpenAI's limit)


def _whole(value: Any) -> Any:
    """A JSON number that is a whole number (`7` or `7.0`, as JSON Schema's integer), not
    a boolean or a string that looks like one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be a whole number")
    return int(value)


Whole = Annotated[int, BeforeValidator(_whole)]


class EmbeddingsBody(BaseModel):
    """OpenAI's embeddings request, every field it documents."""

    model_config = ConfigDict(extra="forbid")

    input: StrictStr | list[StrictStr] | list[Whole] | list[list[Whole]]
    model: str = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[Whole, Field(ge=1)] | None = None
    user: str | None = None  # inert: OpenAI uses it for abuse monitoring only

    def inputs(self) -> list[str] | list[list[int]]:
        """The inputs as a list of texts or of token-id lists; a 400 for an empty one."""
        given = self.input
        inputs: list[str] | list[list[int]]
        if isinstance(given, str):
            inputs = [given]
        elif given and all(isinstance(t, int) for t in given):
            inputs = [[t for t in given if isinstance(t, int)]]  # one input as token ids
        else:
            inputs = given  # type: ignore[assignment]  # list[str] or list[list[int]]
        if not inputs:
            raise DoorError("input is an empty list; send one or more inputs", param="input")
        if len(inputs) > MAX_INPUTS:
            raise DoorError(
                f"input holds {len(inputs)} inputs, more than the {MAX_INPUTS} one request "
                "may; split it into several requests",
                param="input",
            )
        for index, item in enumerate(inputs):
            if not item:
                raise DoorError(
                    f"input[{index}] is empty; every input needs some text or token ids",
                    param="input",
                )
        return inputs


def _invalid(exc: ValidationError) -> DoorError:
    """A 400 naming the first bad field; `input`'s in one sentence, not one per shape of
    the union it failed."""
    loc = exc.errors(include_url=False)[0].get("loc", ())
    if loc[:1] == ("input",):
        return DoorError(
            "input must be a string, a list of strings, a list of token ids (whole numbers) "
            "or a list of token-id lists",
            param="input",
        )
    return invalid(exc)


def encode(vector: list[float], encoding_format: str) -> list[float] | str:
    """A vector as the answer carries it: floats, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


class Embeddings:
    """`POST /v1/embeddings` at `door` (its worker pool, metrics and generation limit)."""

    def __init__(self, door: Door) -> None:
        self.door = door

    def routes(self) -> list[BaseRoute]:
        return [Route(ROUTE, self.serve, methods=["POST"])]

    async def serve(self, request: Request) -> Response:
        door = self.door
        try:
            try:
                body = EmbeddingsBody.model_validate_json(await request.body())
            except ValidationError as exc:
                raise _invalid(exc) from None
            inputs = body.inputs()
            await door.check_model(body.model)  # 404 model_not_found, as completions
            response = await self._answer(request, body, inputs)
        except DoorError as exc:
            if exc.status >= 500:
                door.metrics.failed(exc.code or "server_error")
            response = exc.response()
        door.metrics.request_done(ROUTE, response.status_code)
        return response

    async def _answer(
        self, request: Request, body: EmbeddingsBody, inputs: list[str] | list[list[int]]
    ) -> Response:
        answer: dict[str, Any] = {}

        async def work() -> None:
            answer.update(await self._embed(body, inputs))

        if not await until_hung_up(request, work, within=None):
            return Response(status_code=499)  # nginx's "client closed request"; unread
        dims = int(answer["dimensions"])
        if body.dimensions is not None and body.dimensions != dims:
            raise DoorError(
                f"dimensions {body.dimensions} cannot be given: {body.model} makes vectors of "
                f"{dims} and cannot shorten them; leave dimensions out or send {dims}",
                param="dimensions",
            )
        data = [
            {"object": "embedding", "index": i, "embedding": encode(v, body.encoding_format)}
            for i, v in enumerate(answer["data"])
        ]
        tokens = int(answer["prompt_tokens"])
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _embed(self, body: EmbeddingsBody, inputs: list[str] | list[list[int]]) -> Any:
        """The worker's answers for every chunk of `inputs`, joined: a slot of a worker of
        the model is taken as a completion takes one (queued, or a worker started), and
        taken again when that worker cannot answer yet (still loading)."""
        pool = self.door.pool
        op = Infer(model=body.model, prompt="(embeddings)")  # what admission reads
        job = _request_job(op)
        refused_since: float | None = None
        front = False
        while True:
            try:
                pick = await pool.admit(op, job, front=front)
            except JobError as exc:  # queue full, no hive can start it, …
                raise from_job_error(exc, param="input") from exc
            try:
                return await self._send(pick, inputs)
            except _NotYet as busy:
                pool.view.cool(pick.worker, UNAVAILABLE_RETRY_S)
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since > UNAVAILABLE_WAIT_S:
                    raise DoorError(
                        f"worker {pick.worker.worker_id} could not take the inputs within "
                        f"{UNAVAILABLE_WAIT_S:g} s ({busy}); retry later",
                        status=503,
                        retry_after_s=1,
                    ) from None
                front = True  # keep its turn
            finally:
                pool.release(op, pick)

    async def _send(self, pick: Pick, inputs: list[str] | list[list[int]]) -> dict[str, Any]:
        """POST `inputs` to `pick`'s worker, CHUNK_INPUTS at a time, within the door's
        generation limit (a chunk of long inputs takes minutes on a busy CPU: no read
        timeout of its own); raises _NotYet (503, not started) or DoorError."""
        view = self.door.pool.view
        worker = pick.worker
        token = view.hives.worker_token(pick.hive_id, worker.worker_id)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        limit = self.door.generation_timeout_s
        vectors: list[list[float]] = []
        tokens = 0
        dims = 0
        async with httpx.AsyncClient(
            base_url=worker.url,
            headers=headers,
            timeout=httpx.Timeout(CONNECT_TIMEOUT_S, read=None),
            trust_env=False,  # loopback or the cluster's own addresses: never a proxy
            verify=tls_for(worker.url),
        ) as http:
            with anyio.move_on_after(limit if limit is not None else math.inf) as scope:
                for start in range(0, len(inputs), CHUNK_INPUTS):
                    chunk = inputs[start : start + CHUNK_INPUTS]
                    try:
                        reply = await http.post(WORKER_PATH, json={"input": chunk})
                    except httpx.TransportError as exc:
                        if not vectors and view.still_starting(worker):
                            raise _NotYet("it is still starting") from exc
                        view.gone(worker)
                        raise DoorError(
                            f"worker {worker.worker_id} at {worker.url} went away while "
                            f"embedding ({type(exc).__name__}); retry",
                            status=502,
                        ) from exc
                    if reply.status_code != 200:
                        raise _refused(reply, worker.worker_id, start, bool(vectors))
                    try:
                        answer = reply.json()
                        vectors += answer["data"]
                        tokens += int(answer["prompt_tokens"])
                        dims = int(answer["dimensions"])
                    except (ValueError, KeyError, TypeError) as exc:
                        raise DoorError(
                            f"worker {worker.worker_id} answered embeddings in a shape this "
                            f"queen does not read ({exc!r}); check that hive and queen run "
                            "the same rbee version",
                            status=502,
                        ) from exc
        if scope.cancelled_caught:
            raise generation_timeout(limit or 0)
        return {"data": vectors, "prompt_tokens": tokens, "dimensions": dims}


class _NotYet(Exception):
    """The worker cannot take the inputs yet (loading); the request keeps its turn."""


def _refused(reply: httpx.Response, worker_id: str, offset: int, started: bool) -> Exception:
    """The door's answer for a worker's refusal: 503 before the first chunk means not yet
    (loading); 400 is the caller's input (renumbered from the chunk to the request)."""
    try:
        body = reply.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    message = str(body.get("error") or f"HTTP {reply.status_code}")
    detail = body.get("detail")
    info = detail if isinstance(detail, dict) else {}
    if reply.status_code == 503 and not started:
        return _NotYet(message)
    if reply.status_code in (400, 422):
        index = info.get("index")
        if isinstance(index, int):  # the worker counts within the chunk it was sent
            message = message.replace(f"input {index} ", f"input[{offset + index}] ", 1)
        code = info.get("code")
        return DoorError(message, param="input", code=code if isinstance(code, str) else None)
    return DoorError(f"worker {worker_id} failed to embed the inputs: {message}", status=502)


def _request_job(op: Infer) -> Job:
    """The job-shaped record admission and provisioning narrate into for one request (a
    model fetched, a worker started): in memory, for the request's life."""
    job_id = f"emb-{secrets.token_hex(8)}"
    job = Job(job_id, op, JobLog(job_id, lambda log: None))
    job.mark_ready()
    return job


def _body_schema() -> dict[str, Any]:
    """The body's schema, `input` with the limits `EmbeddingsBody.inputs` checks (no empty
    input, at most MAX_INPUTS, token ids from 0) and `dimensions` from 1 (pydantic writes
    the bound of a validated number as `ge`, which JSON Schema does not know)."""
    schema = EmbeddingsBody.model_json_schema()
    text = {"type": "string", "minLength": 1}
    ids = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}

    def listed(item: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": item}

    schema["properties"]["input"] = {
        "title": "Input",
        "anyOf": [text, listed(text), ids, listed(ids)],
    }
    schema["properties"]["dimensions"] = {
        "title": "Dimensions",
        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
        "default": None,
    }
    return schema


OPENAPI_PATHS: dict[str, Any] = {
    ROUTE: {
        "post": {
            "summary": "OpenAI embeddings: a unit vector per input from a worker of the model",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _body_schema()}},
            },
            "responses": {
                "200": {
                    "description": "{object: list, data: [{object: embedding, index, "
                    "embedding}], model, usage: {prompt_tokens, total_tokens}}",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **{
                    status: {"description": why}
                    for status, why in {
                        "400": "a malformed body, an empty input, an input over the context, "
                        "or dimensions other than the model's",
                        "401": "the queen has a token and the API key is missing or wrong",
                        "404": "model_not_found: no worker, catalog or model reference has it",
                        "502": "the worker failed or vanished while embedding",
                        "503": "no worker can take the inputs now (queue full, loading)",
                        "504": "the embedding ran past the queen's generation limit",
                    }.items()
                },
            },
        }
    }
}
