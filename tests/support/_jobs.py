"""Running one job on a job server and reading what it narrated."""

from __future__ import annotations

import contextlib
from typing import Any

from anyio.abc import TaskGroup

from jobs import JobEvent, JobFinished
from jobs.client import JobClient


async def run_job(client: JobClient, operation: dict[str, object]) -> list[JobEvent]:
    """Submit a job and read its SSE stream to the end."""
    job_id = await client.submit(operation)
    return [event async for event in client.stream(job_id)]


async def submit_followed(
    client: JobClient, tg: TaskGroup, operation: dict[str, Any]
) -> tuple[str, list[JobEvent]]:
    """Submit `operation` and follow its stream in `tg`: its id, and the list its events
    are appended to as they arrive (for a test that watches several jobs at once)."""
    events: list[JobEvent] = []
    job_id = await client.submit(operation)

    async def follow() -> None:
        async for event in client.stream(job_id):
            events.append(event)

    tg.start_soon(follow)
    return job_id, events


async def cancel_running(client: JobClient, job_ids: list[str]) -> None:
    """Cancel each of `job_ids` still running; one that ended on its own meanwhile (a slow
    machine finished its answer first) needs nothing."""
    for job_id in job_ids:
        with contextlib.suppress(JobFinished):
            await client.cancel(job_id)


def narration(events: list[JobEvent]) -> list[tuple[str, str, str]]:
    """The (actor, action, human) of each narration event, in order."""
    return [
        (e.data["actor"], e.data["action"], e.data["human"])
        for e in events
        if e.kind == "narration"
    ]


async def stop_the_only_worker(jobs: JobClient) -> None:
    """Stop the one worker the queen behind `jobs` knows (`worker_stop` through it)."""
    status = await run_job(jobs, {"operation": "queen_status"})
    (worker,) = status[-1].data["result"]["workers"]
    stop = {"operation": "worker_stop", "hive_id": worker["hive_id"]}
    stopped = await run_job(jobs, {**stop, "worker_id": worker["worker_id"]})
    assert stopped[-1].data["state"] == "completed", stopped[-1].data


async def answer_tiny(jobs: JobClient) -> list[JobEvent]:
    """builtin:tiny asked through `jobs` for 8 tokens, seeded (unseeded, it may draw its end
    token first): the events, once the job completed with tokens."""
    events = await run_job(
        jobs,
        {"operation": "infer", "model": "builtin:tiny", "prompt": "the hive", "seed": 3,
         "max_tokens": 8},
    )  # fmt: skip
    assert events[-1].data["state"] == "completed", events[-1].data
    assert any(e.kind == "token" for e in events)
    return events
