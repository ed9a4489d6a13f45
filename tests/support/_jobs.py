"""Running one job on a job server and reading what it narrated."""

from __future__ import annotations

from jobs import JobEvent
from jobs.client import JobClient


async def run_job(client: JobClient, operation: dict[str, object]) -> list[JobEvent]:
    """Submit a job and read its SSE stream to the end."""
    job_id = await client.submit(operation)
    return [event async for event in client.stream(job_id)]


def narration(events: list[JobEvent]) -> list[tuple[str, str, str]]:
    """The (actor, action, human) of each narration event, in order."""
    return [
        (e.data["actor"], e.data["action"], e.data["human"])
        for e in events
        if e.kind == "narration"
    ]
