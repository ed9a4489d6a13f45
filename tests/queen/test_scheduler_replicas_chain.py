"""Replicas with real hives and real llama.cpp workers (builtin:tiny): `model_serve`
keeps N workers, a worker killed with -9 is replaced, a restarted queen keeps the wish
without starting a duplicate of the workers that survived it, and the keeper's `model
serve`, `model list` and `model unserve` say so; and a full queue refuses a job
submission with 503 and Retry-After."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hive.tiny_model import TinyShape, write_tiny_model
from jobs import JobEvent
from jobs.client import JobClient
from tests.support import (
    BEAT_S,
    Chain,
    await_until,
    cancel_running,
    extra_hive,
    queen_with_hive,
    run_job,
    spawn_hive,
    spawn_queen,
    submit_followed,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
REPLACED_DEADLINE_S = 120.0  # a beat drops the dead worker, a new one loads on 2 busy cores
EOS = "2"  # the tiny model's end token, banned so a long answer runs its 2000 tokens


def ended(events: list[JobEvent]) -> dict[str, Any]:
    final: dict[str, Any] = events[-1].data
    assert final["state"] == "completed", final
    return final


def serve(model: str, replicas: int, **fields: Any) -> dict[str, Any]:
    return {"operation": "model_serve", "model": model, "replicas": replicas, **fields}


async def queen_status(queen_url: str) -> dict[str, Any]:
    """The queen's status snapshot (its hives, workers and the replicas it keeps)."""
    async with JobClient(queen_url) as client:
        status: dict[str, Any] = ended(await run_job(client, {"operation": "queen_status"}))
    return dict(status["result"])


async def tiny_workers(queen_url: str) -> list[dict[str, Any]]:
    """The live builtin:tiny workers the queen's status lists."""
    status = await queen_status(queen_url)
    return [
        w
        for w in status["workers"]
        if w["model"] == "tiny" and w["state"] in ("ready", "busy", "loading", "starting")
    ]


async def test_serve_keeps_two_workers_and_a_killed_one_is_replaced(rbee_home: Path) -> None:
    """`model_serve builtin:tiny --replicas 2`: the job ends with two workers running and
    the status lists the wish; kill -9 of one worker brings a new one (2 again, a new
    id); `--replicas 0` forgets the wish."""
    async with queen_with_hive(rbee_home, hives={}) as (queen, _), JobClient(queen.url) as client:
        result = ended(await run_job(client, serve("builtin:tiny", 2)))["result"]
        [row] = result["served"]
        assert (row["model"], row["replicas"], len(row["live"])) == ("builtin:tiny", 2, 2)
        workers = await tiny_workers(queen.url)
        assert len(workers) == 2
        victim = workers[0]
        os.kill(victim["pid"], signal.SIGKILL)

        async def replaced() -> bool:
            now = await tiny_workers(queen.url)
            ids = {w["worker_id"] for w in now}
            return len(now) == 2 and victim["worker_id"] not in ids

        await await_until(replaced, deadline_s=REPLACED_DEADLINE_S)
        status = await queen_status(queen.url)
        assert [(s["model"], s["replicas"]) for s in status["served"]] == [("builtin:tiny", 2)]
        ended(await run_job(client, serve("builtin:tiny", 0)))
        assert (await queen_status(queen.url))["served"] == []


async def test_a_restarted_queen_keeps_serving_without_a_duplicate(rbee_home: Path) -> None:
    """A queen that served builtin:tiny with 1 replica is restarted beside its hive (whose
    beats never reach it): it still lists the wish and, having asked the hive, starts no
    second worker."""
    async with spawn_hive(
        rbee_home, "--queen-url", "http://127.0.0.1:9", "--beat-interval", f"{BEAT_S:g}"
    ) as hive:
        configured = ("--hive", f"localhost={hive.url}")
        async with spawn_queen(rbee_home, *configured) as queen, JobClient(queen.url) as client:
            result = ended(await run_job(client, serve("builtin:tiny", 1)))["result"]
            [first] = result["served"][0]["live"]
        async with spawn_queen(rbee_home, *configured) as queen, JobClient(queen.url) as client:

            async def kept() -> bool:
                served = (await queen_status(queen.url))["served"]
                return bool(served) and served[0]["live"] == [first]

            await await_until(kept, deadline_s=30)
            listed = ended(
                await run_job(client, {"operation": "worker_list", "hive_id": "localhost"})
            )
            assert [w["worker_id"] for w in listed["result"]["workers"]] == [first]


def test_keeper_model_serve_list_and_unserve(tmp_path: Path) -> None:
    """`keeper model serve builtin:tiny --replicas 1 --max-replicas 2` ends with one
    worker running; `keeper model list` names what the queen keeps and its worker;
    `keeper status` shows it in its `served` table; `keeper model unserve` forgets it
    (the list and the status no longer name it)."""
    chain = Chain(tmp_path / "home")
    chain.start_queen()
    try:
        chain.start_hive()
        served = chain.run(
            "model", "serve", "builtin:tiny", "--replicas", "1", "--max-replicas", "2"
        )
        assert "Keeping builtin:tiny: 1 worker (up to 2 while its queue grows)" in served.stdout
        assert "builtin:tiny has 1 worker running" in served.stdout
        listed = chain.run("model", "list").stdout
        assert "Kept running: builtin:tiny, 1 replica(s) (up to 2); 1 live: w-" in listed
        status = chain.run("status").stdout
        assert re.search(r"builtin:tiny\s+any\s+1 \(up to 2\)\s+1: w-", status), status
        unserved = chain.run("model", "unserve", "builtin:tiny").stdout
        assert "No longer keeping workers of builtin:tiny running" in unserved
        assert "Kept running" not in chain.run("model", "list").stdout
        assert "served" not in chain.run("status").stdout
    finally:
        chain.stop()


async def test_a_full_queue_answers_503_with_retry_after_and_makes_no_job(
    rbee_home: Path, tmp_path: Path
) -> None:
    """RBEE_MAX_QUEUE 1, a one-slot worker of a slow model generating and one prompt
    waiting: `POST /v1/jobs` with one more infer answers 503 with Retry-After and
    {error, detail} naming the queue, and no job is made for it."""
    slow = tmp_path / "slow.gguf"  # wide enough that its answers take seconds
    write_tiny_model(slow, shape=TinyShape(n_ctx=2048, n_embd=512, n_layer=8, n_ff=2048))
    async with (
        queen_with_hive(rbee_home, hives={}, max_queue=1) as (queen, _),
        JobClient(queen.url) as client,
    ):
        download: dict[str, object] = {"operation": "model_download", "model": str(slow)}
        model = ended(await run_job(client, download))["result"]["id"]
        ended(await run_job(client, {"operation": "worker_spawn", "model": model, "parallel": 1}))
        long = {"operation": "infer", "model": model, "prompt": "bees", "max_tokens": 2000,
                "logit_bias": {EOS: -100}}  # fmt: skip
        async with anyio.create_task_group() as tg:
            busy, events = await submit_followed(client, tg, long)
            await await_until(lambda: any(e.kind == "token" for e in events), deadline_s=60)
            waiting, _ = await submit_followed(client, tg, long)
            before = len(await client.list_jobs(limit=50))
            async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
                refused = await http.post("/v1/jobs", json=long)
            after = len(await client.list_jobs(limit=50))
            await cancel_running(client, [busy, waiting])
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    body = refused.json()
    assert f"the queue for {model} is full" in body["error"]
    assert body["detail"]["queued"] == 1 and after == before


async def test_a_queue_that_keeps_waiting_adds_a_worker_on_the_other_hive(
    rbee_home: Path, tmp_path: Path
) -> None:
    """Two hives, a slow model kept at 1 replica up to 2: while long prompts wait in its
    queue, the queen starts a second worker, on the hive without one; never a third."""
    slow = tmp_path / "slow.gguf"  # wide enough that its answers take seconds
    write_tiny_model(slow, shape=TinyShape(n_ctx=2048, n_embd=512, n_layer=8, n_ff=2048))
    async with (
        queen_with_hive(rbee_home, hives={}) as (queen, _),
        extra_hive(queen, tmp_path / "gpu2", "gpu2"),
        JobClient(queen.url) as client,
    ):
        ended(await run_job(client, serve(str(slow), 1, max_replicas=2)))

        async def hives_serving() -> list[str]:
            status = await queen_status(queen.url)
            live = set(status["served"][0]["live"])
            return [w["hive_id"] for w in status["workers"] if w["worker_id"] in live]

        assert len(await hives_serving()) == 1
        slots = next(w["slots"] for w in (await queen_status(queen.url))["workers"])
        long = {"operation": "infer", "model": str(slow), "prompt": "bees", "max_tokens": 2000,
                "logit_bias": {EOS: -100}}  # fmt: skip
        async with anyio.create_task_group() as tg:
            jobs = [(await submit_followed(client, tg, long))[0] for _ in range(slots + 2)]

            async def two_hives() -> bool:
                return sorted(await hives_serving()) == ["gpu2", "localhost"]

            await await_until(two_hives, deadline_s=90)
            await cancel_running(client, jobs)
        assert len(await hives_serving()) == 2
