"""Ctrl-C on a keeper command that follows a queen job: the job ends too, exit 130.

The keeper is a real process started with Ctrl-C live (as in a terminal); the queen is
the real queen-rbee, its hive a port that accepts and never answers, so the job waits on
its upstream, as a first `keeper infer` waits while the hive fetches the model.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support import only_job, silent_hive, spawn_queen, state_after

DEADLINE_S = 15.0  # keeper start-up (~0.5 s, more on a busy box) plus the cancel


@pytest.mark.anyio
async def test_ctrl_c_while_the_queen_has_not_answered_the_submit_cancels_the_job(
    rbee_home: Path, keeper
) -> None:
    """Ctrl-C while POST /v1/jobs still waits on a slow hive: exit 130, the queen job cancelled."""
    async with silent_hive() as hive_url, spawn_queen(rbee_home, "--hive", f"slow={hive_url}") as q:
        argv = [sys.executable, "-m", "keeper", "--queen-url", q.url, "worker", "list"]
        process = await anyio.open_process(
            [*argv, "--hive", "slow"],
            env=keeper.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        async with process:
            with anyio.fail_after(DEADLINE_S):
                job_id, state = await only_job(q.url)
                assert state == "running"
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 130
                assert await state_after(q.url, job_id, "running") == "cancelled"
            assert process.stderr is not None
            err = b"".join([chunk async for chunk in process.stderr]).decode()
        assert err == "keeper: interrupted\n"
        async with httpx.AsyncClient(base_url=q.url, trust_env=False) as client:
            assert (await client.get("/health")).status_code == 200
