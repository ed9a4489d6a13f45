"""kill -9 of one worker mid-generation, with real processes (issue 20): only the
request it was generating fails; the requests waiting in the queue go to the other
worker and complete."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobs import JobEvent
from jobs.client import JobClient
from tests.support import await_until, queen_with_hive, run_job, submit_followed
from tests.support.e2e import PROMPT

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
TOKENS = 120  # seconds on the slow model with two workers: long enough to be killed mid-run
QUEUED_TOKENS = 16  # the queued prompts: their answers, not their length, matter


def final(events: list[JobEvent]) -> dict[str, Any]:
    data: dict[str, Any] = events[-1].data
    return data


def sent_to(events: list[JobEvent]) -> str | None:
    """The worker the queen sent a job's prompt to (its `infer` line's target), if yet."""
    for e in events:
        if e.kind == "narration" and (e.data["actor"], e.data["action"]) == ("queen-rbee", "infer"):
            return str(e.data["target"])
    return None


async def test_killing_a_worker_fails_only_its_request_and_the_queue_moves_on(
    rbee_home: Path, slow_model: Path
) -> None:
    """Two one-slot workers of the slow model each generating, two more prompts queued:
    kill -9 of the first worker fails its prompt alone (naming the worker); both queued
    prompts complete on the other worker."""
    async with queen_with_hive(rbee_home) as (queen, _), JobClient(queen.url) as client:
        download: dict[str, object] = {"operation": "model_download", "model": str(slow_model)}
        model_id = final(await run_job(client, download))["result"]["id"]
        workers: list[dict[str, Any]] = []
        for _ in range(2):
            spawn = {"operation": "worker_spawn", "model": model_id, "parallel": 1}
            done = final(await run_job(client, spawn))
            assert done["state"] == "completed", done
            workers.append(done["result"])
        infer = {"operation": "infer", "model": model_id, "prompt": PROMPT}
        infer |= {"max_tokens": TOKENS, "temperature": 0.0}
        async with anyio.create_task_group() as tg:
            running = [await submit_followed(client, tg, infer) for _ in range(2)]

            def generating(events: list[JobEvent]) -> bool:
                return any(e.kind == "token" for e in events)

            await await_until(lambda: all(generating(ev) for _, ev in running), deadline_s=60)
            short = {**infer, "max_tokens": QUEUED_TOKENS}
            queued = [await submit_followed(client, tg, short) for _ in range(2)]
            await await_until(
                lambda: all(any(e.data.get("action") == "queued" for e in ev) for _, ev in queued),
                deadline_s=30,
            )
            victim = next(w for w in workers if w["worker_id"] == sent_to(running[0][1]))
            other = next(w for w in workers if w is not victim)
            os.kill(victim["pid"], signal.SIGKILL)
        killed, survived = running[0][1], running[1][1]
        assert final(killed)["state"] == "failed"
        assert victim["worker_id"] in final(killed)["error"]
        for events in (survived, *(ev for _, ev in queued)):
            assert final(events)["state"] == "completed", final(events)
            assert final(events)["result"]["worker_id"] == other["worker_id"]
