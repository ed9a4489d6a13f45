"""kill -9 of a real queen mid-stream: recovery never reuses an id a client was sent."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from jobs import JobEvent, parse_jsonl
from jobs.client import JobClient
from jobs.server import CRASH_REASON
from tests.support import spawn_queen

BUSY = {"operation": "queen_status", "watch": True, "interval_s": 0.01}


@pytest.mark.anyio
async def test_resume_after_kill_9_gets_the_final_state_with_a_new_id(rbee_home: Path) -> None:
    """A subscriber killed mid-stream with its queen resumes with Last-Event-ID on the restarted
    queen and gets every event it missed, then the crash `failed` event under an id it never saw,
    stamped with the recovery time."""
    seen: list[JobEvent] = []
    async with spawn_queen(rbee_home) as queen:
        async with JobClient(queen.url) as client:
            job_id = await client.submit(BUSY)
            with anyio.fail_after(20):
                async for event in client.stream(job_id):
                    seen.append(event)
                    if len(seen) == 40:  # mid-stream, events still arriving
                        queen.process.kill()
                        break
            killed_at = time.time()
        await queen.process.wait()
    last_sent = seen[-1].seq
    log = rbee_home / "state" / "joblogs" / f"{job_id}.jsonl"
    on_disk = [e for line in log.read_text().splitlines() if (e := parse_jsonl(line)) is not None]
    assert on_disk[-1].seq >= last_sent  # nothing was sent before it was in the file

    async with spawn_queen(rbee_home) as queen, JobClient(queen.url) as client:
        resumed = [e async for e in client.stream(job_id, after=last_sent)]
        record = await client.get_job(job_id)
    assert [e.seq for e in resumed] == list(range(last_sent + 1, resumed[-1].seq + 1))
    final = resumed[-1]
    assert final.state == "failed" and final.data["error"] == CRASH_REASON
    assert final.seq == on_disk[-1].seq + 1
    assert final.data["ts"] >= killed_at  # the recovery time, not the job's last update
    assert record["state"] == "failed" and record["error"] == CRASH_REASON
    assert [e.to_event() for e in on_disk[: len(seen)]] == seen
