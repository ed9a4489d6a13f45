"""The queen's scheduler with real hives, real workers and real llama.cpp (builtin:tiny):
refs matched on every hive, a queen that never heard a beat, a deleted model, the queue.

The queen runs in this process (so a test sets what only settings set, such as the
queue's bound) or as the real program; the hives are the real rbee-hive.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hive.tiny_model import TinyShape, write_tiny_model
from jobs import JobEvent, RbeePaths, cluster_secret
from jobs.client import JobClient
from queen.hives import HiveRegistry
from queen.infer import WorkerPool
from tests.support import (
    BEAT_S,
    await_until,
    cancel_running,
    extra_hive,
    narration,
    queen_with_hive,
    run_job,
    spawn_hive,
    spawn_queen,
    submit_followed,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


SEED = 3  # builtin:tiny's 4 tokens after "the hive" with it are text; unseeded, about one
# run in a hundred draws the end token first and answers nothing


def infer(model: str, **fields: Any) -> dict[str, Any]:
    op = {"operation": "infer", "model": model, "prompt": "the hive", "max_tokens": 4}
    return {**op, "seed": SEED, **fields}


def ended(events: list[JobEvent]) -> dict[str, Any]:
    """The final state event's data of a job, asserting it completed."""
    final: dict[str, Any] = events[-1].data
    assert final["state"] == "completed", final
    return final


def spawns(events: list[JobEvent]) -> list[str]:
    """The queen's own `worker_spawn` lines in a job: a worker it started for the job."""
    return [
        h
        for actor, action, h in narration(events)
        if (actor, action) == ("queen-rbee", "worker_spawn")
    ]


def sent_to(events: list[JobEvent]) -> str:
    """The worker the queen sent a job's prompt to (its `infer` line's target)."""
    return next(
        str(e.data["target"])
        for e in events
        if e.kind == "narration" and (e.data["actor"], e.data["action"]) == ("queen-rbee", "infer")
    )


def tokens(events: list[JobEvent]) -> list[str]:
    return [str(e.data["t"]) for e in events if e.kind == "token"]


async def test_builtin_tiny_is_served_when_two_hives_each_run_a_tiny_worker(
    rbee_home: Path, tmp_path: Path
) -> None:
    """Two hives each with a ready builtin:tiny worker (spawned through the queen, whose
    catalogs it never asked): a prompt for `builtin:tiny` and one for `tiny` are both
    served by those workers, with no new worker and no 'several hives' refusal."""
    async with (
        queen_with_hive(rbee_home, hives={}) as (queen, _),
        extra_hive(queen, tmp_path / "gpu2", "gpu2"),
        JobClient(queen.url) as client,
    ):
        started = set()
        for hive_id in ("localhost", "gpu2"):
            spawn = {"operation": "worker_spawn", "hive_id": hive_id, "model": "builtin:tiny"}
            started.add(
                ended(await run_job(client, {**spawn, "device": "cpu"}))["result"]["worker_id"]
            )
        for ref in ("builtin:tiny", "tiny"):
            events = await run_job(client, infer(ref))
            assert ended(events)["result"]["worker_id"] in started
            assert tokens(events) and not spawns(events)


async def test_concurrent_prompts_for_a_model_no_worker_has_start_one_worker(
    rbee_home: Path,
) -> None:
    """Five prompts for builtin:tiny at once on a hive with no worker: all are served, the
    queen starts one worker for them (the others wait their turn), and the hive runs one."""
    async with queen_with_hive(rbee_home, hives={}) as (queen, _), JobClient(queen.url) as client:
        jobs: list[list[JobEvent]] = [[] for _ in range(5)]

        async def one(into: list[JobEvent]) -> None:
            into.extend(await run_job(client, infer("builtin:tiny")))

        async with anyio.create_task_group() as tg:
            for events in jobs:
                tg.start_soon(one, events)
        listed = await run_job(client, {"operation": "worker_list", "hive_id": "localhost"})
    workers = [w["worker_id"] for w in ended(listed)["result"]["workers"]]
    assert len(workers) == 1
    assert all(ended(events)["result"]["worker_id"] == workers[0] for events in jobs)
    assert sum(len(spawns(events)) for events in jobs) == 1


async def test_a_queen_that_never_heard_a_beat_uses_the_worker_a_hive_runs(
    rbee_home: Path,
) -> None:
    """A queen restarted beside a hive whose beats have not reached it yet (here: never,
    they go to the old queen's port) serves builtin:tiny on the worker the hive already
    runs: it asks the hive's worker_list before spawning, so no second worker loads."""
    async with spawn_hive(
        rbee_home, "--queen-url", "http://127.0.0.1:9", "--beat-interval", f"{BEAT_S:g}"
    ) as hive:
        configured = ("--hive", f"localhost={hive.url}")
        async with spawn_queen(rbee_home, *configured) as queen, JobClient(queen.url) as client:
            first = await run_job(client, infer("builtin:tiny"))
            assert spawns(first)
            worker_id = ended(first)["result"]["worker_id"]
        async with spawn_queen(rbee_home, *configured) as queen, JobClient(queen.url) as client:
            again = await run_job(client, infer("builtin:tiny"))
            assert ended(again)["result"]["worker_id"] == worker_id and not spawns(again)
            listed = ended(
                await run_job(client, {"operation": "worker_list", "hive_id": "localhost"})
            )
            assert [w["worker_id"] for w in listed["result"]["workers"]] == [worker_id]


async def test_after_model_delete_infer_fetches_the_model_again_without_a_restart(
    rbee_home: Path,
) -> None:
    """builtin:tiny served, its worker stopped and the model deleted through the queen: the
    next prompt for builtin:tiny fetches it again and is served, no queen restart needed."""
    async with queen_with_hive(rbee_home, hives={}) as (queen, _), JobClient(queen.url) as client:
        first = ended(await run_job(client, infer("builtin:tiny")))["result"]
        stop = {"operation": "worker_stop", "hive_id": "localhost", "worker_id": first["worker_id"]}
        ended(await run_job(client, stop))
        ended(
            await run_job(
                client, {"operation": "model_delete", "hive_id": "localhost", "model": "tiny"}
            )
        )
        again = await run_job(client, infer("builtin:tiny"))
        ended(again)
        assert tokens(again)
        assert "model_download" in [action for _, action, _ in narration(again)]


async def test_a_worker_idle_longer_than_keep_alive_is_stopped_through_its_hive(
    rbee_home: Path,
) -> None:
    """A builtin:tiny worker that served a prompt, then sat idle past keep_alive (0.5 s
    here), is stopped through its hive's worker_stop: the hive runs no worker after."""
    async with (
        queen_with_hive(rbee_home, hives={}) as (queen, hive),
        JobClient(queen.url) as client,
    ):
        ended(await run_job(client, infer("builtin:tiny")))

        async def workers() -> list[dict[str, Any]]:
            listed = await run_job(client, {"operation": "worker_list", "hive_id": "localhost"})
            return list(ended(listed)["result"]["workers"])

        async def idle() -> bool:  # the hive's word on its slots lags the answer a little
            return all(w["state"] == "ready" and not w["slots_busy"] for w in await workers())

        await await_until(idle, deadline_s=30)
        secret = cluster_secret(RbeePaths.resolve(rbee_home))
        pool = WorkerPool(HiveRegistry({"localhost": hive.url}, secret=secret), keep_alive_s=0.5)
        await pool.provisioner.ask_unheard()  # learns the worker, as a restarted queen does
        assert len(pool.loaded()) == 1

        async def none_left() -> bool:
            return not await workers()

        async with pool.running():
            await await_until(none_left, deadline_s=30)
    assert pool.loaded() == []


@pytest.fixture
def slow_model(tmp_path: Path) -> Iterator[Path]:
    """A tiny model wide enough that a long answer takes seconds (a slot stays busy)."""
    path = tmp_path / "slow.gguf"
    write_tiny_model(path, shape=TinyShape(n_ctx=2048, n_embd=512, n_layer=8, n_ff=2048))
    yield path


async def test_a_full_queue_answers_503_while_the_queued_request_waits_its_turn(
    rbee_home: Path, slow_model: Path
) -> None:
    """With RBEE_MAX_QUEUE 1 and every slot of the only worker busy: the next request waits,
    narrating its place ('0 ahead'); one more gets 503 at the OpenAI door saying when to
    retry; once a busy one ends, the waiting one is served by that worker."""
    model = str(slow_model)
    long = infer(model, max_tokens=2000, temperature=0.0, seed=1)
    async with (
        queen_with_hive(rbee_home, hives={}, max_queue=1) as (queen, _),
        JobClient(queen.url) as client,
        anyio.create_task_group() as tg,
    ):
        busy = [await submit_followed(client, tg, long)]
        await await_until(lambda: bool(tokens(busy[0][1])), deadline_s=120)  # loaded
        status = ended(await run_job(client, {"operation": "queen_status"}))["result"]
        for _ in range(status["workers"][0]["slots"] - 1):  # every slot generating
            busy.append(await submit_followed(client, tg, long))
            await await_until(lambda: bool(tokens(busy[-1][1])), deadline_s=30)
        _, waiting = await submit_followed(client, tg, infer(model))
        await await_until(lambda: any(a == "queued" for _, a, _ in narration(waiting)))
        async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
            refused = await http.post(
                "/v1/completions", json={"model": model, "prompt": "x", "max_tokens": 2}
            )
        assert refused.status_code == 503, refused.text
        assert "retry in" in refused.json()["error"]["message"]
        assert not tokens(waiting)  # it waited while every slot was busy
        await cancel_running(client, [job_id for job_id, _ in busy])
        await await_until(lambda: bool(waiting) and waiting[-1].is_final, deadline_s=60)
    assert ended(waiting)["result"]["worker_id"] == sent_to(busy[0][1])
    assert ("queen-rbee", "queued", f"Waiting for a free slot on {model}: 0 ahead") in narration(
        waiting
    )
