"""Parallel slots on the real worker process: many requests generated at once in one
llama.cpp context, each with its own sampling, stop strings, token budget and cancel."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from hive.tiny_model import TinyShape, write_tiny_model
from jobs import JobEvent
from tests.support import (
    WORKER_AUTH,
    await_until,
    in_process_llama,
    infer,
    spawn_worker,
    start_inference,
    text_of,
    timed_stream,
    worker_health,
)

pytestmark = pytest.mark.anyio

# Wide enough that a token takes milliseconds and a stream of them seconds.
SLOW = TinyShape(n_ctx=2048, n_embd=512, n_layer=8, n_ff=2048)
# builtin:tiny with room for answers long enough that eight requests POSTed one after
# another overlap. (Wider models do not give the same tokens batched as alone: their
# matrix products round differently by batch size, as in llama.cpp's own server.)
ROOMY = TinyShape(n_ctx=1024)
# A context of 4,096 tokens, ~2 ms a token, and a 2,000-token prompt that takes about two
# seconds: many prompt chunks of a quarter of a second.
DEEP = TinyShape(n_ctx=4096, n_embd=256, n_layer=8, n_ff=1024)
LONG_PROMPT = "the queen bee is " * 120  # ~2,000 of builtin:tiny's tokens
FREED_S = 2.0  # a cancelled slot is free within a step; this allows a busy machine


def tokens_of(events: list[tuple[float, JobEvent]]) -> list[tuple[float, JobEvent]]:
    return [(t, e) for t, e in events if e.kind == "token"]


def slot_of(events: list[JobEvent]) -> int:
    starts = [e for e in events if e.kind == "narration" and e.data["action"] == "inference_start"]
    return int(starts[0].data["fields"]["slot"])


async def test_eight_requests_at_once_each_get_their_own_answer(
    rbee_home: Path, tmp_path: Path
) -> None:
    """Eight requests sent at once to a worker with eight slots are generated together
    (several slots in use), and on builtin:tiny each ends exactly as it does alone: the
    same text, its own max_tokens counted as `length`, its own stop string as `stop`, its
    prompt's tokens."""
    model = tmp_path / "roomy.gguf"
    write_tiny_model(model, shape=ROOMY)
    requests = [
        {"prompt": f"the hive {i}", "max_tokens": 300 + 60 * i, "seed": i, "temperature": 0.8}
        for i in range(8)
    ]
    async with spawn_worker(rbee_home, model, "--parallel", "8") as worker:
        await worker.wait_action("ready")
        alone = [await infer(worker.url, **r) for r in requests]  # type: ignore[arg-type]
        last = text_of(alone[7])
        requests[7]["stop"] = [last[len(last) // 2 : len(last) // 2 + 2]]
        expected_7 = last[: last.index(requests[7]["stop"][0])]  # type: ignore[index]
        together: list[list[JobEvent]] = [[] for _ in requests]

        async def send_and_read(i: int) -> None:  # all eight POSTed at once
            job_id = await start_inference(worker.url, **requests[i])  # type: ignore[arg-type]
            together[i] = [e for _, e in await timed_stream(worker.url, job_id)]

        async with anyio.create_task_group() as tg:
            for i in range(len(requests)):
                tg.start_soon(send_and_read, i)
    results = [events[-1].data["result"] for events in together]
    assert [events[-1].state for events in together] == ["completed"] * 8
    assert [text_of(e) for e in together[:7]] == [text_of(e) for e in alone[:7]]
    assert text_of(together[7]) == expected_7 and results[7]["stop_reason"] == "stop"
    ends = [(r["stop_reason"], r["tokens_out"], r["prompt_tokens"]) for r in results]
    solo = [e[-1].data["result"] for e in alone]
    assert ends[:7] == [(r["stop_reason"], r["tokens_out"], r["prompt_tokens"]) for r in solo[:7]]
    lengths = [(r["tokens_out"], q["max_tokens"]) for r, q in zip(results, requests, strict=True)]
    assert [n == most for (reason, *_), (n, most) in zip(ends, lengths, strict=True)] == [
        reason == "length" for reason, *_ in ends
    ]
    assert {reason for reason, *_ in ends} == {"length", "stop"}  # both ends are tried
    assert len({slot_of(events) for events in together}) >= 2  # some ran side by side


async def test_a_cancelled_request_frees_its_slot_while_the_others_stream(
    rbee_home: Path, tmp_path: Path
) -> None:
    """Three long generations share a worker's three slots; cancelling one frees its slot
    within FREED_S while the two others keep streaming, and a new request then takes the
    free slot and generates beside them."""
    model = tmp_path / "slow.gguf"
    write_tiny_model(model, shape=SLOW)
    long = {"prompt": "a", "max_tokens": 1800, "temperature": 0.8}
    async with spawn_worker(rbee_home, model, "--parallel", "3") as worker:
        await worker.wait_action("ready")
        ids = [await start_inference(worker.url, **long, seed=i) for i in range(3)]  # type: ignore[arg-type]
        streams: list[list[tuple[float, JobEvent]]] = [[], [], []]
        async with anyio.create_task_group() as tg:
            for job_id, into in zip(ids, streams, strict=True):
                tg.start_soon(timed_stream, worker.url, job_id, into)
            await await_until(lambda: all(tokens_of(s) for s in streams), deadline_s=30)
            async with httpx.AsyncClient(
                base_url=worker.url, trust_env=False, headers=WORKER_AUTH
            ) as http:
                await http.delete(f"/v1/jobs/{ids[0]}")
                with anyio.fail_after(FREED_S):
                    while (await http.get("/health")).json()["slots_busy"] != 2:  # noqa: ASYNC110 - polled
                        await anyio.sleep(0.01)
                before = [len(tokens_of(s)) for s in streams[1:]]
                await await_until(
                    lambda: all(
                        len(tokens_of(s)) > n + 5 for s, n in zip(streams[1:], before, strict=True)
                    )
                )
                extra = await start_inference(worker.url, **long, seed=9)  # type: ignore[arg-type]
                streams.append([])
                tg.start_soon(timed_stream, worker.url, extra, streams[3])
                await await_until(lambda: bool(tokens_of(streams[3])), deadline_s=10)
                health = (await http.get("/health")).json()
                for job_id in (*ids[1:], extra):
                    await http.delete(f"/v1/jobs/{job_id}")
    assert [s[-1][1].state for s in streams] == ["cancelled"] * 4
    assert health["slots_busy"] == 3 and all(s["tokens"] > 0 for s in health["slot_info"])
    assert all(len(tokens_of(s)) < long["max_tokens"] for s in streams)  # type: ignore[operator]


async def test_greedy_at_one_slot_is_llama_cpp_python_s_own_answer(
    rbee_home: Path, tmp_path: Path
) -> None:
    """At --parallel 1 and temperature 0 the worker's tokens are exactly those
    llama-cpp-python's greedy `generate` gives in-process, and its result counts the
    prompt's llama tokens and the generated ones."""
    pytest.importorskip("llama_cpp")
    model = tmp_path / "tiny.gguf"
    write_tiny_model(model)
    greedy = {"max_tokens": 40, "temperature": 0.0}
    async with spawn_worker(rbee_home, model, "--parallel", "1") as worker:
        await worker.wait_action("ready")
        events = await infer(worker.url, "the queen and the worker", **greedy)
    with in_process_llama(model) as llm:
        prompt = llm.tokenize(b"the queen and the worker", add_bos=True, special=True)
        stream = llm.generate(prompt, temp=0.0)
        tokens = [t for _, t in zip(range(greedy["max_tokens"]), stream, strict=False)]
        stream.close()
        tokens = tokens[: next((i for i, t in enumerate(tokens) if llm.token_eos() == t), None)]
        expected = llm.detokenize(tokens).decode("utf-8", errors="ignore")
    result = events[-1].data["result"]
    assert text_of(events) == expected != ""
    assert (result["prompt_tokens"], result["tokens_out"]) == (len(prompt), len(tokens))


async def test_a_long_prompt_mid_run_pauses_a_stream_one_chunk_at_most(
    rbee_home: Path, tmp_path: Path
) -> None:
    """A 2,000-token prompt arriving while another request streams is evaluated in chunks
    between that stream's tokens: the stream keeps getting tokens meanwhile, and its
    longest pause (between tokens its slot counts, as /health shows them: a token is not
    always a piece of text) is a fraction of the prompt's whole evaluation, not all of it."""
    model = tmp_path / "deep.gguf"
    write_tiny_model(model, shape=DEEP)
    # One thread: two ggml threads on two loaded cores stall whole steps when either is
    # preempted, noise that would drown the pauses measured here.
    flags = ("--ctx-size", "4096", "--threads", "1")
    async with spawn_worker(rbee_home, model, *flags) as worker:
        await worker.wait_action("ready")
        running_id = await start_inference(worker.url, "a", max_tokens=3500, seed=1)
        running: list[tuple[float, JobEvent]] = []
        counted: list[tuple[float, int]] = []  # (time, tokens of the running slot)

        async def count(http: httpx.AsyncClient, slot: int) -> None:
            while True:
                tokens = (await http.get("/health")).json()["slot_info"][slot]["tokens"]
                if not counted or counted[-1][1] != tokens:
                    counted.append((anyio.current_time(), tokens))
                await anyio.sleep(0.005)

        async with (
            httpx.AsyncClient(base_url=worker.url, trust_env=False, headers=WORKER_AUTH) as http,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(timed_stream, worker.url, running_id, running)
            await await_until(lambda: len(tokens_of(running)) >= 50, deadline_s=30)
            slots = (await http.get("/health")).json()["slot_info"]
            slot = next(s["id"] for s in slots if s["state"] == "generating")
            tg.start_soon(count, http, slot)
            sent = anyio.current_time()
            long_id = await start_inference(worker.url, LONG_PROMPT, max_tokens=4, seed=2)
            long = await timed_stream(worker.url, long_id)
            first = tokens_of(long)[0][0]
            await http.delete(f"/v1/jobs/{running_id}")
            tg.cancel_scope.cancel()
    result = long[-1][1].data["result"]
    assert result["prompt_tokens"] > 1900 and result["stop_reason"] == "length"
    during = [t for t, _ in counted if sent <= t <= first]
    assert counted[-1][0] > first  # the stream ran all through the prompt's evaluation
    eval_s = first - sent
    gaps = [b - a for a, b in zip([sent, *during], [*during, first], strict=True)]
    assert len(during) >= 3, (eval_s, gaps)
    assert max(gaps) < eval_s / 2, (eval_s, gaps)


async def test_health_shows_slots_threads_and_context(rbee_home: Path, tmp_path: Path) -> None:
    """/health tells the slots (total, busy, each one's state), the threads llama.cpp
    decodes with (the physical cores unless --threads), the context per slot (never more
    than the model's trained window) and the KV cache's bytes, as llama.cpp sizes it."""
    model = tmp_path / "tiny.gguf"
    write_tiny_model(model)
    shape = TinyShape()
    per_cell = shape.n_layer * 2 * shape.n_embd * 2  # keys and values, f16, every layer
    async with spawn_worker(rbee_home, model, "--parallel", "3", "--ctx-size", "9999") as worker:
        await worker.wait_action("ready")
        three = await worker_health(worker.url)
    async with spawn_worker(rbee_home, model, "--threads", "1") as worker:
        await worker.wait_action("ready")
        one = await worker_health(worker.url)
    assert (three["slots"], three["slots_busy"], three["ctx_size"]) == (3, 0, shape.n_ctx)
    assert three["threads"] == (psutil.cpu_count(logical=False) or psutil.cpu_count())
    assert three["kv_bytes"] == 3 * shape.n_ctx * per_cell
    assert [s["state"] for s in three["slot_info"]] == ["idle"] * 3
    assert (one["slots"], one["threads"], one["kv_bytes"]) == (2, 1, 2 * shape.n_ctx * per_cell)
