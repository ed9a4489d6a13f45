"""Generation on the real worker process with real llama.cpp on builtin:tiny."""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hive.tiny_model import TinyShape, write_tiny_model
from jobs.client import JobClient
from tests.support import (
    WORKER_AUTH,
    WORKER_CREDENTIAL,
    RunningProgram,
    infer,
    spawn_worker,
    text_of,
    wait_busy,
)
from worker.inference import QUEUE_MAX

pytestmark = pytest.mark.anyio

LONG = {"prompt": "a", "max_tokens": 240, "seed": 1}  # runs to the limit on builtin:tiny
# Seconds of tokens on slow_worker's model: its end token (2) banned, 2000 of them.
ENDLESS = {"prompt": "a", "max_tokens": 2000, "seed": 1, "logit_bias": {"2": -100}}
SAMPLING = {"max_tokens": 24, "temperature": 0.8, "top_p": 0.95, "top_k": 40, "seed": 42}
# With SAMPLING, builtin:tiny answers this in 24 tokens that make fewer pieces of text
# (byte tokens that join into one character), and create_completion runs on past
# max_tokens to finish characters (38 tokens): the case where pieces and tokens differ.
CHAT_PROMPT = "<|user|>\nhello bee</s>\n<|assistant|>\n"


@pytest.fixture
async def worker(rbee_home: Path, tmp_path: Path) -> AsyncIterator[RunningProgram]:
    model = tmp_path / "tiny.gguf"
    write_tiny_model(model)
    async with spawn_worker(rbee_home, model) as running:
        await running.wait_action("ready")
        yield running


@pytest.fixture
async def slow_worker(rbee_home: Path, tmp_path: Path) -> AsyncIterator[RunningProgram]:
    """A worker of a model wide enough that a long answer takes seconds: a test that must
    cancel a generation still running does not race it to its end."""
    model = tmp_path / "slow.gguf"
    write_tiny_model(model, shape=TinyShape(n_ctx=2048, n_embd=512, n_layer=8, n_ff=2048))
    async with spawn_worker(rbee_home, model) as running:
        await running.wait_action("ready")
        yield running


@contextmanager
def in_process(model: Path) -> Iterator[Any]:
    """llama-cpp-python's `Llama` on `model` in this process, closed afterwards."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=0, verbose=False)
    try:
        yield llm
    finally:
        llm.close()
        with warnings.catch_warnings():  # llama-cpp-python leaks /dev/null handles
            warnings.simplefilter("ignore", ResourceWarning)
            del llm
            gc.collect()


async def test_tokens_match_llama_cpp_in_process_and_repeat(
    worker: RunningProgram, tmp_path: Path
) -> None:
    """The worker streams, as `token` events, exactly the text llama-cpp-python generates
    in-process for the same model, prompt, seed and sampling, and counts the same tokens;
    twice the same; and the job narrates inference_start/inference_complete and ends with
    the generation's figures."""
    first = await infer(worker.url, "the queen", **SAMPLING)
    second = await infer(worker.url, "the queen", **SAMPLING)
    with in_process(tmp_path / "tiny.gguf") as llm:
        direct = llm.create_completion("the queen", **SAMPLING)
    assert text_of(first) == text_of(second) == direct["choices"][0]["text"] != ""
    result = first[-1].data["result"]
    assert first[-1].state == "completed"
    assert result["tokens_out"] == direct["usage"]["completion_tokens"]
    assert result["stop_reason"] in ("length", "stop") and result["first_token_ms"] is not None
    actions = [e.data["action"] for e in first if e.kind == "narration"]
    assert actions.index("inference_start") < actions.index("inference_complete")


async def test_tokens_out_counts_llama_tokens_not_pieces_of_text(
    worker: RunningProgram, tmp_path: Path
) -> None:
    """`tokens_out` and inference_complete's "N tokens" count the tokens llama.cpp sampled,
    not the pieces of text sent (a piece may hold several byte tokens): a generation that
    stops by length counted exactly max_tokens, and its text is those tokens' text, as
    llama-cpp-python's own token generator gives them in-process."""
    events = await infer(worker.url, CHAT_PROMPT, **SAMPLING)
    result = events[-1].data["result"]
    pieces = sum(e.kind == "token" for e in events)
    assert (result["stop_reason"], result["tokens_out"]) == ("length", SAMPLING["max_tokens"])
    assert pieces < result["tokens_out"]  # this prompt and seed join tokens into pieces
    complete = [
        e for e in events if e.kind == "narration" and e.data["action"] == "inference_complete"
    ]
    assert complete[0].data["human"].startswith(f"{SAMPLING['max_tokens']} tokens in ")
    with in_process(tmp_path / "tiny.gguf") as llm:
        llm.set_seed(SAMPLING["seed"])
        tokens = llm.tokenize(CHAT_PROMPT.encode(), add_bos=True, special=True)
        sampled = llm.generate(
            tokens, top_k=SAMPLING["top_k"], top_p=SAMPLING["top_p"], temp=SAMPLING["temperature"]
        )
        generated = [
            token for _, token in zip(range(SAMPLING["max_tokens"]), sampled, strict=False)
        ]
        sampled.close()
        expected = llm.detokenize(generated).decode("utf-8", errors="ignore")
    assert text_of(events) == expected


async def test_a_stop_string_ends_the_text_before_it(worker: RunningProgram) -> None:
    """A stop string taken from the middle of a generation's text ends the same
    generation there: the text before it arrives, the stop string never does, and the job
    says `stop`, having counted fewer tokens than the generation without it."""
    sampling = {**SAMPLING, "max_tokens": 48, "seed": 7}
    whole = await infer(worker.url, "the queen", **sampling)
    text = text_of(whole)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = await infer(worker.url, "the queen", **sampling, stop=[stop])
    assert len(stop) == 2 and text_of(cut) == text[: text.index(stop)]
    result = cut[-1].data["result"]
    assert result["stop_reason"] == "stop"
    assert result["tokens_out"] < whole[-1].data["result"]["tokens_out"]


async def test_generations_that_fill_the_context_run_back_to_back(worker: RunningProgram) -> None:
    """A request asking for more tokens than the context holds ends at the context's end,
    and the same worker then serves the same request again (llama.cpp's reused cache once
    had no slot left: `llama_decode returned 1`); an over-long prompt is refused in words."""
    prompt = "the queen bee says " * 5  # ~100 of builtin:tiny's 256 context tokens
    for seed in (0, 1):  # the same seed twice reuses the cache differently and passes
        events = await infer(worker.url, prompt, max_tokens=1000, seed=seed)
        assert events[-1].state == "completed", events[-1].data
        assert events[-1].data["result"]["stop_reason"] == "length" and text_of(events)
    refused = await infer(worker.url, "bee " * 400, max_tokens=4)
    assert refused[-1].state == "failed"
    assert "context holds 256" in refused[-1].data["error"]


async def test_cancel_stops_generation_and_the_worker_serves_the_next(
    worker: RunningProgram,
) -> None:
    """Cancelling a running generation ends its job `cancelled` with fewer tokens than asked
    (seed 1 on builtin:tiny runs to the length limit), and the worker is idle and serves
    the next request."""
    async with httpx.AsyncClient(base_url=worker.url, trust_env=False, headers=WORKER_AUTH) as http:
        running = await http.post("/v1/inference", json=LONG)
        await wait_busy(http)
        await http.delete(f"/v1/jobs/{running.json()['job_id']}")
        async with JobClient(worker.url, token=WORKER_CREDENTIAL) as client:
            events = [e async for e in client.stream(running.json()["job_id"])]
        health = (await http.get("/health")).json()
    assert events[-1].state == "cancelled", events[-1].data
    assert sum(e.kind == "token" for e in events) < LONG["max_tokens"]
    assert (health["busy"], health["waiting"], health["slots_busy"]) == (False, 0, 0)
    after = await infer(worker.url, "the hive", max_tokens=4, seed=2)
    assert after[-1].state == "completed" and text_of(after)


async def test_busy_worker_queues_then_answers_503(slow_worker: RunningProgram) -> None:
    """While every slot generates, QUEUE_MAX more requests are queued (201) and the next is
    refused with 503 and Retry-After; cancelling them all leaves the worker idle."""
    worker = slow_worker  # 240 tokens of builtin:tiny could end before the cancel
    async with httpx.AsyncClient(base_url=worker.url, trust_env=False, headers=WORKER_AUTH) as http:
        slots = (await http.get("/health")).json()["slots"]
        running = [await http.post("/v1/inference", json=ENDLESS) for _ in range(slots)]
        await wait_busy(http, slots)
        queued = [await http.post("/v1/inference", json=ENDLESS) for _ in range(QUEUE_MAX)]
        refused = await http.post("/v1/inference", json=ENDLESS)
        waiting = (await http.get("/health")).json()["waiting"]
        ids = [r.json()["job_id"] for r in (*running, *queued)]
        for job_id in reversed(ids):  # the waiting ones first, then the running ones
            await http.delete(f"/v1/jobs/{job_id}")
        async with JobClient(worker.url, token=WORKER_CREDENTIAL) as client:
            finals = [[e async for e in client.stream(job_id)][-1] for job_id in ids]
        health = (await http.get("/health")).json()
    assert slots == 2  # a CPU worker's default
    assert [r.status_code for r in queued] == [201] * QUEUE_MAX and waiting == QUEUE_MAX
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["error"]
    assert {f.state for f in finals} == {"cancelled"}
    assert (health["busy"], health["waiting"], health["slots_busy"]) == (False, 0, 0)
