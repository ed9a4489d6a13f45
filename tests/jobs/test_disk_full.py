"""Disk full under a real queen: only the job that could not write fails; the service recovers.

RBEE_HOME is a 2 MiB tmpfs (`small_home`); the disk is filled with a file while a
`queen_status` watch job streams to a subscriber, then freed again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from jobs import JobEvent, parse_jsonl
from jobs.client import JobClient
from tests.support import spawn_queen

FAST = {"operation": "queen_status", "watch": True, "interval_s": 0.05}
IDLE = {"operation": "queen_status", "watch": True, "interval_s": 3600}  # writes once, then waits


def is_status(event: JobEvent) -> bool:
    return event.kind == "narration" and event.data["action"] == "status"


def keeper_status(home: Path, url: str) -> int:
    env = {**os.environ, "RBEE_HOME": str(home), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "keeper", "--queen-url", url, "queen", "status"],
        env=env, capture_output=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    ).returncode  # fmt: skip


@pytest.mark.anyio
async def test_disk_full_fails_the_writing_job_only_and_the_queen_recovers(
    small_home: Path, kit
) -> None:
    """With the disk full, the streaming job fails saying so (every event it was sent is in its
    log, with one final state), an idle job lives on, /health is 503, new jobs get 507 naming
    the file that fills the disk (but a one-shot status, which only reads, still runs) and
    `keeper queen status` fails; once space returns, jobs run again without a restart."""
    received: list[JobEvent] = []
    async with (
        spawn_queen(small_home) as queen,
        JobClient(queen.url) as client,
        httpx.AsyncClient(base_url=queen.url, timeout=10, trust_env=False) as http,
        anyio.create_task_group() as tg,
    ):
        idle = await client.submit(IDLE)
        async for event in client.stream(idle):
            if is_status(event):
                break
        fast = await client.submit(FAST)
        ended = anyio.Event()

        async def subscribe() -> None:
            async for event in client.stream(fast):
                received.append(event)
            ended.set()

        tg.start_soon(subscribe)
        await kit.wait_until(lambda: sum(map(is_status, received)) >= 3)
        filler = await anyio.to_thread.run_sync(kit.fill_disk, small_home)

        with anyio.fail_after(20):
            await ended.wait()
        final = received[-1]
        assert final.state == "failed" and "disk" in final.data["error"]
        assert "is full" in final.data["error"]
        health = await http.get("/health")
        assert health.status_code == 503 and "is full" in health.json()["error"]
        refused = await http.post("/v1/jobs", json=FAST)
        assert refused.status_code == 507
        assert set(refused.json()) == {"error", "detail"} and "is full" in refused.json()["error"]
        assert f"{filler} (" in refused.json()["error"]  # what fills the disk, by name
        status = await client.submit({"operation": "queen_status"})  # `keeper status`
        assert [e async for e in client.stream(status)][-1].state == "completed"
        assert (await http.get("/health")).status_code == 503  # the disk is still full
        assert await anyio.to_thread.run_sync(keeper_status, small_home, queen.url) != 0
        assert (await client.get_job(idle))["state"] == "running"

        filler.unlink()
        await kit.wait_until(lambda: _healthy(http))
        again = await client.submit({"operation": "queen_status"})
        assert [e async for e in client.stream(again)][-1].state == "completed"
        assert await client.cancel(idle) == "cancelled"
        assert await anyio.to_thread.run_sync(keeper_status, small_home, queen.url) == 0

    log = small_home / "state" / "joblogs" / f"{fast}.jsonl"
    on_disk = [e.to_event() for line in log.read_text().splitlines() if (e := parse_jsonl(line))]
    assert on_disk == received
    assert sum(1 for e in on_disk if e.is_final) == 1
    async with spawn_queen(small_home) as queen, JobClient(queen.url) as client:
        record = await client.get_job(fast)
        replay = [e async for e in client.stream(fast)]
    assert record["state"] == "failed" and "is full" in record["error"]
    assert replay == received


async def _healthy(http: httpx.AsyncClient) -> bool:
    return (await http.get("/health")).status_code == 200
