"""The queen dies (`kill -9`) while the keeper follows one of its jobs.

The keeper resumes the stream for a few seconds, then gives up. What it says must let the
user find the job again: which job it was following, and how to see how it ended once the
queen runs again (crash recovery ends it `failed`, docs/failures.md).
"""

from __future__ import annotations

import signal
from pathlib import Path

import psutil

from keeper.daemons import PidFile
from tests.support import start_in_background, wait_until

DEADLINE_S = 60.0  # the keeper's reconnect attempts, on a busy machine


def test_losing_the_queen_mid_job_names_the_job_and_how_to_see_its_end(
    keeper, rbee_home: Path, free_tcp_port: int
) -> None:
    """kill -9 of the queen under `keeper status --watch`: exit 3, one sentence naming the job
    and `keeper jobs logs ID`; after a restart that command shows the job failed."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    started = keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
    assert started.returncode == 0, started.stderr
    record = PidFile(rbee_home / "run", "queen").read()
    assert record is not None
    watching = start_in_background(keeper, "--queen-url", url, "-v", "status", "--watch")
    try:
        assert watching.stdout is not None
        first = watching.stdout.readline()  # -v: the keeper's `submitted` line names the job
        assert "submitted" in first, first
        job_id = first.split("Job ", 1)[1].split()[0]
        psutil.Process(record.pid).send_signal(signal.SIGKILL)
        _, err = watching.communicate(timeout=DEADLINE_S)
        assert watching.returncode == 3, err
        sentence = err.splitlines()[-1]
        assert job_id in sentence and f"keeper jobs logs {job_id}" in sentence, sentence
    finally:
        watching.kill()

    wait_until(lambda: not psutil.pid_exists(record.pid), "the queen to be gone")
    again = keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
    assert again.returncode == 0, again.stderr
    try:
        logs = keeper("--queen-url", url, "jobs", "logs", job_id)
        assert logs.returncode == 1
        assert "crash or kill" in logs.stderr
    finally:
        keeper("--queen-url", url, "queen", "stop")
