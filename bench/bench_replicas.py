"""Replicas: two single-threaded workers on two cores against one, through the queen.

    .venv/bin/python bench/bench_replicas.py [--quick]

Starts a real queen and hive under a temporary RBEE_HOME, spawns two workers of the same
model through the queen (`worker_spawn --threads 1`) and pins each to its own core
(`os.sched_setaffinity`, what `taskset -c` does), then measures in interleaved rounds
(the order alternating, so a machine whose load drifts slows both alike):

- one worker: CLIENTS infer jobs sent at once to the queen, all naming the first worker
  (`worker_id`), so they share its core (its slots, then the queen's queue);
- two workers: the same jobs naming no worker: the queen's scheduler spreads them.

Aggregate tokens/s = the jobs' `tokens_out` / the wall time from the first submit to the
last end. Goal (issue 20): two workers >= 1.8x one. The machine is shared (others run
tests on it): each round prints the load average, and a round beside someone else's
work is not comparable to a quiet one's; the ratio printed is the median of the rounds.

The model is SmolLM2-135M-Instruct from .cache/smollm2.gguf when a bench fetched it
before (bench_slots.py does), else a tiny model wide enough to take real time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
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
CLIENTS = 8  # concurrent infer jobs per round
READY_S = 120.0  # a daemon's start, or a worker's load, on a busy machine
TOPICS = ("bees", "a hive", "honey", "flowers", "the queen", "summer", "a garden", "wax")


def model_path(home: Path) -> tuple[Path, str]:
    cached = CACHE / "smollm2.gguf"
    if cached.exists():
        return cached, "SmolLM2-135M-Instruct Q4_1"
    from hive.tiny_model import TinyShape, write_tiny_model

    tiny = home / "wide.gguf"
    write_tiny_model(tiny, shape=TinyShape(n_ctx=2048, n_embd=512, n_layer=8, n_ff=2048))
    return tiny, "a tiny model (512 wide, 8 layers)"


def start(argv: list[str], home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RBEE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def until(check: Any, what: str) -> None:
    """Poll the async `check` until it is true, for READY_S at most."""
    with anyio.fail_after(READY_S):
        while True:
            try:
                if await check():
                    return
            except httpx.HTTPError:
                pass
            await anyio.sleep(0.2)
    raise RuntimeError(f"{what} did not happen within {READY_S:g} s")


async def run(client: JobClient, op: dict[str, Any]) -> dict[str, Any]:
    """Submit `op`, read its job to the end; its result (raises if it did not complete)."""
    job_id = await client.submit(op)
    final: dict[str, Any] = {}
    async for event in client.stream(job_id):
        if event.is_final:
            final = event.data
    if final.get("state") != "completed":
        raise RuntimeError(f"{op['operation']} ended {final.get('state')}: {final.get('error')}")
    return dict(final.get("result") or {})


async def aggregate(client: JobClient, model: str, tokens: int, worker: str | None) -> float:
    """Tokens/s of CLIENTS infer jobs sent at once (all to `worker` when given)."""
    totals: list[int] = []
    started = time.perf_counter()

    async def one(i: int) -> None:
        op: dict[str, Any] = {"operation": "infer", "model": model, "max_tokens": tokens}
        op |= {"prompt": f"Write a long story about {TOPICS[i % len(TOPICS)]}.", "seed": i}
        if worker is not None:
            op["worker_id"] = worker
        totals.append(int((await run(client, op))["tokens_out"]))

    async with anyio.create_task_group() as tg:
        for i in range(CLIENTS):
            tg.start_soon(one, i)
    return sum(totals) / (time.perf_counter() - started)


async def bench(home: Path, quick: bool) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print(f"only {len(cores)} core(s) available to this process: two workers cannot be")
        print("pinned apart, so there is nothing to compare; skipped")
        return
    model, label = model_path(home)
    queen_port, hive_port = free_port(), free_port()
    queen_url = f"http://127.0.0.1:{queen_port}"
    hive = f"localhost=http://127.0.0.1:{hive_port}"
    daemons = [start(["-m", "queen", "--port", str(queen_port), "--hive", hive], home)]
    daemons.append(start(["-m", "hive", "--port", str(hive_port), "--queen-url", queen_url], home))
    try:
        async with httpx.AsyncClient(base_url=queen_url, trust_env=False) as http:

            async def beating() -> bool:
                status = (await http.get("/v1/status")).json()
                return any(h["hive_id"] == "localhost" and h["version"] for h in status["hives"])

            await until(beating, "the hive's first beat")
        async with JobClient(queen_url) as client:
            model_id = str(
                (await run(client, {"operation": "model_download", "model": str(model)}))["id"]
            )
            workers = []
            for core in cores[:2]:
                spawn = {"operation": "worker_spawn", "model": model_id, "threads": 1}
                worker = await run(client, spawn)
                os.sched_setaffinity(int(worker["pid"]), {core})  # `taskset -c core`
                workers.append(worker)
            print(f"model: {label}; {CLIENTS} clients; {conditions()}")
            print(
                "workers: "
                + ", ".join(
                    f"{w['worker_id']} on core {c} ({w['slots']} slot(s))"
                    for w, c in zip(workers, cores, strict=False)
                )
            )
            print("the machine is shared: other people's tests may run beside a round")
            tokens = 24 if quick else 96
            rounds = 2 if quick else 5
            await aggregate(client, model_id, 8, None)  # warm both up
            ratios = []
            for r in range(rounds):
                order = [None, workers[0]["worker_id"]]
                if r % 2:
                    order.reverse()
                rate: dict[str | None, float] = {}
                for worker in order:
                    rate[worker] = await aggregate(client, model_id, tokens, worker)
                one, two = rate[workers[0]["worker_id"]], rate[None]
                ratios.append(two / one)
                load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                print(
                    f"round {r + 1}: one worker {one:.1f} tok/s, two {two:.1f} tok/s, "
                    f"ratio {two / one:.2f}x (load {load})"
                )
            ratio = statistics.median(ratios)
            verdict = "meets" if ratio >= 1.8 else "misses"
            print(
                f"two workers / one, aggregate tok/s: {ratio:.2f}x (median; goal >= 1.8x: ", end=""
            )
            print(f"{verdict})")
    finally:
        for process in daemons:
            process.terminate()
        for process in daemons:
            process.wait(30)


def main() -> None:
    quick = quick_flag(__doc__, "two short rounds (what `make bench` runs)")
    with owned_home("rbee-bench-replicas-") as home:
        anyio.run(bench, home, quick)


if __name__ == "__main__":
    main()
