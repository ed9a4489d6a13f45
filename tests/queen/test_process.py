"""The real queen-rbee process: startup narration, refusal, SIGTERM, kill -9 and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from jobs import JobEvent, parse_jsonl
from jobs.client import JobClient
from jobs.server import CRASH_REASON, JobRegistry
from tests.support import spawn_queen

WATCH = {"operation": "queen_status", "watch": True, "interval_s": 0.02}


async def first_events(client: JobClient, job_id: str, statuses: int) -> list[JobEvent]:
    """Read the job's stream until `statuses` status narrations arrived, then hang up."""
    seen: list[JobEvent] = []
    with anyio.fail_after(20):
        async for event in client.stream(job_id):
            seen.append(event)
            if sum(1 for e in seen if e.kind == "narration" and e.data["action"] == "status") >= (
                statuses
            ):
                return seen
    raise AssertionError("the stream ended early")


def test_refuses_public_bind_without_token(rbee_home: Path) -> None:
    """Binding beyond loopback without a token exits 2 with a one-sentence reason."""
    env = {**os.environ, "RBEE_HOME": str(rbee_home)}
    env.pop("RBEE_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-m", "queen", "--bind", "0.0.0.0", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "queen-rbee: refusing to listen on 0.0.0.0 without a token; pass --token or set "
        "RBEE_TOKEN, or bind 127.0.0.1"
    )


@pytest.mark.anyio
async def test_sigterm_cancels_running_jobs_and_exits_zero(rbee_home: Path) -> None:
    """SIGTERM: the running job ends `cancelled` (stream and registry), the queen exits 0."""
    async with spawn_queen(rbee_home) as queen:
        assert queen.actions()[:3] == ["start", "listen", "ready"]
        async with JobClient(queen.url) as client:
            job_id = await client.submit(WATCH)
            seen = await first_events(client, job_id, 1)
            last = seen[-1].seq
            async with anyio.create_task_group() as tg:
                rest: list[JobEvent] = []
                following = anyio.Event()

                async def follow() -> None:
                    async for event in client.stream(job_id, after=last):
                        rest.append(event)
                        following.set()

                tg.start_soon(follow)
                with anyio.fail_after(10):  # the stream is open before the stop begins
                    await following.wait()
                queen.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(15):
                assert await queen.process.wait() == 0
    assert rest[-1].state == "cancelled"
    assert rest[0].seq == last + 1
    registry = await JobRegistry.open(rbee_home / "state" / "jobs.sqlite3")
    try:
        assert registry.recovered == []
        assert (await registry.get(job_id)).state == "cancelled"
    finally:
        await registry.aclose()


@pytest.mark.anyio
async def test_kill_9_then_restart_fails_job_and_serves_its_log(rbee_home: Path) -> None:
    """After kill -9 mid-job, a restarted queen reports it failed and serves its log to the kill."""
    async with spawn_queen(rbee_home) as queen:
        async with JobClient(queen.url) as client:
            job_id = await client.submit(WATCH)
            seen = await first_events(client, job_id, 5)
        log = rbee_home / "state" / "joblogs" / f"{job_id}.jsonl"
        with anyio.fail_after(10):  # the flusher writes every 0.2 s; wait for what we saw
            while not log.exists() or len(log.read_text().splitlines()) < len(seen):  # noqa: ASYNC110
                await anyio.sleep(0.02)
        queen.process.kill()
        assert await queen.process.wait() == -signal.SIGKILL
    on_disk = [e for line in log.read_text().splitlines() if (e := parse_jsonl(line)) is not None]

    async with spawn_queen(rbee_home) as queen, JobClient(queen.url) as client:
        record = await client.get_job(job_id)
        replay = [e async for e in client.stream(job_id)]
    assert record["state"] == "failed" and record["error"] == CRASH_REASON
    assert [t["state"] for t in record["transitions"]] == ["queued", "running", "failed"]
    assert replay[: len(seen)] == seen
    assert [e.seq for e in replay] == list(range(1, len(replay) + 1))
    assert len(replay) == len(on_disk) + 1  # everything flushed before the kill, plus the end
    assert replay[-1].state == "failed" and replay[-1].data["error"] == CRASH_REASON


def test_second_queen_on_one_state_folder_refuses_to_start(rbee_home) -> None:
    """A second queen on a state folder already in use exits 2 with one sentence."""
    import subprocess
    import sys

    lock_holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, jobs.server as r; from pathlib import Path;"
            " h = r.lock_state_folder(Path(sys.argv[1])); print('locked', flush=True);"
            " sys.stdin.read()",
            str(rbee_home / "state"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert lock_holder.stdout is not None and lock_holder.stdout.readline() == "locked\n"
        second = subprocess.run(
            [sys.executable, "-m", "queen", "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert "already uses the state folder" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        lock_holder.communicate("")
