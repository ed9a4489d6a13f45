"""Errors a newcomer meets say what is really wrong (issue 11 item 7), through the real CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import foreign_http_server

WAIT_S = 30.0  # deadline for a process to come up on a loaded 2-core machine


@pytest.mark.parametrize("args", [("status",), ("jobs", "list"), ("jobs", "show", "job-x")])
def test_a_server_that_is_not_a_queen_is_named_as_such(
    keeper, free_tcp_port: int, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Another HTTP server on the queen's URL is reported as "not a queen", exit 3."""
    with foreign_http_server(free_tcp_port, tmp_path) as url:
        result = keeper("--queen-url", url, *args)
    assert result.returncode == 3, result.stderr
    assert f"{url} is not a queen" in result.stderr
    assert "refused" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1:7900", "http://", "http://host:port"])
def test_queen_url_that_is_not_a_url_is_a_usage_error(keeper, url: str) -> None:
    """`--queen-url notaurl` says it is not a URL and exits 2, before trying to connect."""
    result = keeper("--queen-url", url, "jobs", "list")
    assert result.returncode == 2, result.stderr
    assert f"--queen-url {url!r} is not a URL" in result.stderr


def test_queen_url_from_the_environment_is_checked_too(keeper) -> None:
    """A bad RBEE_QUEEN_URL is named as the source of the bad URL."""
    env = {**keeper.env(), "RBEE_QUEEN_URL": "notaurl"}
    result = subprocess.run(
        [sys.executable, "-m", "keeper", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert result.returncode == 2
    assert "RBEE_QUEEN_URL 'notaurl' is not a URL" in result.stderr


def test_run_names_the_signal_that_killed_the_command(keeper) -> None:
    """A command killed by SIGKILL is reported as such and keeper exits 128 + 9."""
    result = keeper("run", "--", "sh", "-c", "kill -KILL $$")
    assert result.returncode == 137
    assert "was killed by SIGKILL" in result.stderr
    assert "-9" not in result.stderr and "-9" not in result.stdout


def test_jobs_list_shows_elapsed_time_of_a_running_job(keeper, free_tcp_port: int) -> None:
    """A running job's row counts up from its creation instead of showing 0.0s."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    started = keeper("queen", "start", "--port", str(free_tcp_port))
    assert started.returncode == 0, started.stderr
    watcher = subprocess.Popen(
        [sys.executable, "-m", "keeper", "--queen-url", url, "status", "--watch"],
        env=keeper.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            listed = keeper("--queen-url", url, "jobs", "list")
            assert listed.returncode == 0, listed.stderr
            row = next((line for line in listed.stdout.splitlines() if " running " in line), "")
            elapsed = re.search(r"(\d+\.\d)s so far", row)
            if elapsed is not None and float(elapsed[1]) > 0.0:
                break
            assert time.monotonic() < deadline, listed.stdout
        assert "ELAPSED" in listed.stdout
        jobs = keeper("--json", "--queen-url", url, "jobs", "list")
        assert any(json.loads(line)["state"] == "running" for line in jobs.stdout.splitlines())
    finally:
        watcher.terminate()
        watcher.wait(timeout=WAIT_S)
        assert keeper("queen", "stop").returncode == 0
