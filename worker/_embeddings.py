"""Embeddings: the loaded model's hidden states pooled into one unit vector per input.

    POST /v1/embeddings {input: [str, ...] | [[token id, ...], ...]}
        -> 200 {data: [[float, ...], ...], prompt_tokens, dimensions, pooling}

The generation context belongs to the engine thread (worker/_slots.py), so embeddings
have a llama.cpp context of their own on the same loaded model, made on the first request
(a worker that never embeds pays nothing for it) and used by one thread at a time (`_lock`).
It pools as the GGUF says where it says (an embedding model's `<arch>.pooling_type`:
mean, CLS, last token), else by the mean over the input's tokens, as llama.cpp's server
does for any model. Several inputs go into one `llama_decode`, each its own sequence, up
to MAX_SEQS of them and `Embedder.limit` tokens in all; a sequence is pooled within one ubatch,
so an input longer than that limit (the context, or fewer tokens for a large vocabulary
or many heads, see OUTPUT_BUDGET_BYTES) is refused (400) rather than cut. Vectors come
back with unit length, as OpenAI's do, so a dot product is their cosine.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobs import InvalidRequest
from worker.engine import Engine, model_meta

MAX_SEQS = 16  # inputs decoded together (n_seq_max of the embedding context)
# llama.cpp keeps a row of n_vocab logits for every token of a decode even when it pools
# (about 2 x 4 bytes x n_vocab a token, kept at the largest batch seen), and attention
# without flash attention holds tokens² scores a head: the tokens one decode takes, and
# so the longest input, are chosen to hold each near this budget, at least llama.cpp's
# own ubatch of MIN_TOKENS and at most the model's context.
OUTPUT_BUDGET_BYTES = 256 * 1024 * 1024
MIN_TOKENS = 512
PAD = 256  # llama.cpp pads a context to this many cells; a ubatch of another size aborts
MAX_INPUTS = 2048  # inputs one request may send (OpenAI's own limit)
POOLING = {  # llama.cpp's pooling types, by the names the worker's answer gives
    0: "none",
    1: "mean",
    2: "cls",
    3: "last",
    4: "rank",
}
USABLE_POOLING = (1, 2, 3)  # one vector per sequence; none and rank (rerankers) are not


class EmbeddingsBody(BaseModel):
    """What `POST /v1/embeddings` on a worker takes: texts or token-id lists, not mixed."""

    model_config = ConfigDict(extra="forbid")

    input: list[StrictStr] | list[list[StrictInt]] = Field(min_length=1, max_length=MAX_INPUTS)


class Embedder:
    """The embedding context over `engine`'s model; `embed` from any thread, one at a time."""

    def __init__(self, engine: Engine, *, max_seqs: int = MAX_SEQS) -> None:
        self.engine = engine
        self.max_seqs = max_seqs
        self._lock = threading.Lock()
        self._ctx: Any = None
        self._batch: Any = None
        self._tokens = 0  # tokens a decode takes, once the context is made
        self.pooling: int | None = None  # llama.cpp's pooling type, once the context is made

    @property
    def limit(self) -> int:
        """Tokens one decode takes, and so the longest input (see OUTPUT_BUDGET_BYTES)."""
        import llama_cpp

        n_vocab = max(int(llama_cpp.llama_vocab_n_tokens(self.engine.vocab)), 1)
        n_head = max(int(llama_cpp.llama_model_n_head(self.engine.model)), 1)
        scores = math.isqrt(OUTPUT_BUDGET_BYTES // (n_head * 4))
        fits = min(OUTPUT_BUDGET_BYTES // (n_vocab * 4), scores) // PAD * PAD
        return min(self.engine.ctx_size // PAD * PAD or self.engine.ctx_size, max(fits, MIN_TOKENS))

    @property
    def dimensions(self) -> int:
        """The length of each vector: the model's output embedding size."""
        import llama_cpp

        n_out = getattr(llama_cpp, "llama_model_n_embd_out", None)
        size = int(n_out(self.engine.model)) if n_out is not None else 0
        return size if size > 0 else int(llama_cpp.llama_model_n_embd(self.engine.model))

    def tokenize(self, inputs: list[str] | list[list[int]]) -> list[list[int]]:
        """Each input as token ids (texts as the model tokenizes prompts, start token
        included); raises InvalidRequest (400) for an empty input, a token id the vocabulary
        lacks, or an input longer than the context."""
        import llama_cpp

        n_vocab = llama_cpp.llama_vocab_n_tokens(self.engine.vocab)
        limit = self.limit
        out: list[list[int]] = []
        items: list[str | list[int]] = list(inputs)
        for index, item in enumerate(items):
            tokens: list[int] = (
                self.engine.tokenize(item) if isinstance(item, str) else [int(t) for t in item]
            )
            if not tokens or item == "":
                raise InvalidRequest(
                    f"input {index} is empty; send some text or token ids to embed",
                    status=400,
                    detail={"param": "input", "index": index},
                )
            bad = [t for t in tokens if not 0 <= t < n_vocab]
            if bad:
                raise InvalidRequest(
                    f"input {index} holds token id {bad[0]}, outside this model's vocabulary "
                    f"of {n_vocab}; send ids from 0 to {n_vocab - 1}",
                    status=400,
                    detail={"param": "input", "index": index},
                )
            if len(tokens) > limit:
                raise InvalidRequest(
                    f"input {index} is {len(tokens)} tokens and this worker embeds at most "
                    f"{limit} at once; shorten it or split it into several inputs",
                    status=400,
                    detail={"param": "input", "index": index, "code": "context_length_exceeded"},
                )
            out.append(tokens)
        return out

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """A unit vector for each input (token ids, each at most `limit` long), batched
        MAX_SEQS inputs and `limit` tokens to a decode. Blocks; one caller at a time."""
        with self._lock:
            self._open()
            vectors: list[list[float]] = []
            group: list[list[int]] = []
            for tokens in inputs:
                if group and (
                    len(group) >= self.max_seqs or sum(map(len, group)) + len(tokens) > self._tokens
                ):
                    vectors += self._decode(group)
                    group = []
                group.append(tokens)
            if group:
                vectors += self._decode(group)
            return vectors

    def _open(self) -> None:
        """Make the embedding context on the first call (under the lock)."""
        if self._ctx is not None:
            return
        import llama_cpp

        engine = self.engine
        own = _meta_int(engine.model, "pooling_type")
        pooling = own if own in USABLE_POOLING else llama_cpp.LLAMA_POOLING_TYPE_MEAN
        params = llama_cpp.llama_context_default_params()
        params.embeddings = True
        params.pooling_type = pooling
        tokens = self.limit
        params.n_ctx = tokens
        # A sequence is pooled within one ubatch: the whole batch is one.
        params.n_batch = params.n_ubatch = tokens
        params.n_seq_max = self.max_seqs
        params.kv_unified = True  # the inputs of a batch share the cells, long or short
        params.n_threads = params.n_threads_batch = engine.threads
        # As the engine: flash attention on a CPU rounds differently by batch size (a batch
        # of 12 short inputs moved a vector by 0.006), and an input's vector must not
        # depend on what it came with.
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(engine.model, params)
        if not ctx:
            raise RuntimeError(
                f"llama.cpp could not make an embedding context of {tokens} tokens; "
                "restart the worker with a smaller --ctx-size"
            )
        self._ctx = ctx
        self._tokens = int(llama_cpp.llama_n_batch(ctx))
        self.pooling = int(llama_cpp.llama_pooling_type(ctx))
        self._batch = llama_cpp.llama_batch_init(self._tokens, 0, 1)

    def _decode(self, group: list[list[int]]) -> list[list[float]]:
        import llama_cpp

        batch, ctx = self._batch, self._ctx
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        i = 0
        for seq, tokens in enumerate(group):
            for pos, token in enumerate(tokens):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = True  # every token is an output when pooling
                i += 1
        batch.n_tokens = i
        status = llama_cpp.llama_decode(ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama.cpp could not evaluate the inputs (llama_decode {status})")
        size = self.dimensions
        vectors = []
        for seq in range(len(group)):
            pointer = llama_cpp.llama_get_embeddings_seq(ctx, seq)
            if not pointer:
                raise RuntimeError(f"llama.cpp pooled no embedding for sequence {seq}")
            vectors.append(_unit(pointer[:size]))
        return vectors

    def close(self) -> None:
        """Free the context (before the model goes); waits for an embed in progress."""
        import llama_cpp

        with self._lock:
            if self._batch is not None:
                llama_cpp.llama_batch_free(self._batch)
                self._batch = None
            if self._ctx is not None:
                llama_cpp.llama_free(self._ctx)
                self._ctx = None


def _unit(vector: list[float]) -> list[float]:
    """`vector` scaled to length 1 (a zero vector stays zero), as OpenAI's come."""
    norm = math.sqrt(math.fsum(v * v for v in vector))
    return [v / norm for v in vector] if norm > 0 else list(vector)


def _meta_int(model: Any, suffix: str) -> int | None:
    """The GGUF's `<architecture>.<suffix>` as an integer, or None when it has none."""
    arch = model_meta(model, "general.architecture")
    value = model_meta(model, f"{arch}.{suffix}") if arch else None
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


EMBED_WAITING_MAX = 4  # requests waiting for the embedding context beyond which one is a 503


class Embeddings:
    """The worker's `POST /v1/embeddings` over an Embedder (its context made on first use).
    One request embeds at a time and at most EMBED_WAITING_MAX wait, so a burst can hold
    neither unbounded memory nor every thread the worker's job server also needs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.embedder = Embedder(engine)
        self._turn = anyio.Lock()
        self._waiting = 0

    def routes(self) -> list[BaseRoute]:
        return [Route("/v1/embeddings", self.embeddings, methods=["POST"])]

    def close(self) -> None:
        """Free the embedding context, if one was made (the server is stopping)."""
        self.embedder.close()

    async def embeddings(self, request: Request) -> Response:
        if not self.engine.is_loaded:
            return _unavailable("the model is still loading; retry shortly")
        if self._waiting >= EMBED_WAITING_MAX:
            return _unavailable(
                f"this worker is busy embedding ({EMBED_WAITING_MAX} requests waiting); "
                "retry shortly"
            )
        try:
            body = EmbeddingsBody.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the body"
            raise InvalidRequest(
                f'{where}: {first["msg"]}; send {{"input": [text, ...]}} or token-id lists',
                status=400,
                detail={"param": where},
            ) from None
        self._waiting += 1
        try:
            await self._turn.acquire()
        finally:
            self._waiting -= 1
        try:
            tokens = await anyio.to_thread.run_sync(self.embedder.tokenize, body.input)
            vectors = await anyio.to_thread.run_sync(self.embedder.embed, tokens)
        finally:
            self._turn.release()
        return JSONResponse(
            {
                "data": vectors,
                "prompt_tokens": sum(map(len, tokens)),
                "dimensions": self.embedder.dimensions,
                "pooling": POOLING.get(self.embedder.pooling or 0, "mean"),
            }
        )


def _unavailable(message: str) -> JSONResponse:
    return JSONResponse(
        {"error": message, "detail": {}}, status_code=503, headers={"Retry-After": "1"}
    )
