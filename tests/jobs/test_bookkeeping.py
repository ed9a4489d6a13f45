"""One job's bookkeeping failing (its end cannot be recorded) never touches another job."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from jobs.client import JobClient
from jobs.server import Job

if TYPE_CHECKING:
    from tests.support import JobsKit


@pytest.mark.anyio
async def test_a_result_that_cannot_be_saved_fails_only_its_job(
    kit: JobsKit, tmp_path: Path
) -> None:
    """A handler whose result JSON cannot hold ends `failed` with a reason; a job running beside
    it goes on and completes, and the server keeps taking jobs."""
    gate = anyio.Event()

    async def bad(op: object, job: Job) -> dict:
        return {(1, 2): "tuple keys are not JSON"}

    async def waits(op: object, job: Job) -> str:
        await gate.wait()
        return "done"

    with anyio.fail_after(20):
        await _run(kit, tmp_path, bad, waits, gate)


async def _run(kit: JobsKit, tmp_path: Path, bad: object, waits: object, gate: anyio.Event) -> None:
    async with (
        kit.serve(tmp_path, {"model_list": bad, "hive_list": waits}) as served,
        JobClient(served.url) as client,
    ):
        waiting = await client.submit({"operation": "hive_list"})
        broken = await client.submit({"operation": "model_list"})
        events = [e async for e in client.stream(broken)]
        assert events[-1].state == "failed"
        assert "could not be saved" in events[-1].data["error"]
        assert (await client.get_job(broken))["state"] == "failed"
        assert (await client.get_job(waiting))["state"] == "running"
        gate.set()
        assert [e async for e in client.stream(waiting)][-1].state == "completed"
        again = await client.submit({"operation": "hive_list"})
        assert [e async for e in client.stream(again)][-1].state == "completed"
