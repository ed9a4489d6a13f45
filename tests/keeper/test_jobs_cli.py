"""`keeper status`, `keeper jobs …` and Ctrl-C against a real queen started by keeper."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from narration_core import parse_line


@pytest.fixture
def queen_url(keeper, free_tcp_port: int):
    """A queen started with `keeper queen start`, stopped with `keeper queen stop`."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    started = keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
    assert started.returncode == 0, started.stderr
    yield url
    assert keeper("queen", "stop").returncode == 0


def _jobs(keeper, url: str) -> list[dict]:
    listed = keeper("--json", "--queen-url", url, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def test_status_is_no_job_and_jobs_commands_show_a_job(keeper, queen_url: str) -> None:
    """`keeper status` shows the queen's table and leaves no job behind (looking is not a
    job); `hive list` is one, and list, show and logs find it."""
    status = keeper("--queen-url", queen_url, "status")
    assert status.returncode == 0, status.stderr
    assert queen_url in status.stdout and "hives" in status.stdout, status.stdout
    assert _jobs(keeper, queen_url) == []

    assert keeper("--queen-url", queen_url, "hive", "list").returncode == 0
    (job,) = _jobs(keeper, queen_url)
    assert job["state"] == "completed" and job["operation"] == "hive_list"

    shown = keeper("--json", "--queen-url", queen_url, "jobs", "show", job["job_id"])
    assert shown.returncode == 0
    assert [t["state"] for t in json.loads(shown.stdout)["transitions"]] == [
        "queued",
        "running",
        "completed",
    ]
    plain = keeper("--queen-url", queen_url, "jobs", "show", job["job_id"]).stdout
    assert f"trace      {job['trace_id']}" in plain  # the keeper's request started it

    logs = keeper("--json", "--queen-url", queen_url, "jobs", "logs", job["job_id"])
    assert logs.returncode == 0, logs.stderr
    events = [json.loads(line) for line in logs.stdout.splitlines()]
    assert events[-1] == {**events[-1], "event": "state", "state": "completed"}
    assert any(e["event"] == "narration" and e["action"] == "hive_list" for e in events)


def test_logs_without_follow_returns_while_the_job_runs(keeper, queen_url: str) -> None:
    """`jobs logs ID` on a running job prints what exists and returns; -f would follow."""
    with _start_watch(keeper, queen_url) as watcher:
        job_id = _wait_for_running_job(keeper, queen_url)
        logs = keeper("--queen-url", queen_url, "jobs", "logs", job_id, timeout=30)
        assert logs.returncode == 0, logs.stderr
        assert "status" in logs.stdout
        cancel = keeper("--queen-url", queen_url, "jobs", "cancel", job_id)
        assert cancel.returncode == 0, cancel.stderr
        assert "cancelled" in cancel.stdout
        # The watching keeper sees its job end cancelled: exit 1, job failed to complete.
        assert watcher.wait(timeout=30) == 1


def test_ctrl_c_cancels_the_job_on_the_queen(keeper, queen_url: str) -> None:
    """SIGINT during a streamed job cancels it on the queen, and keeper exits 130."""
    with _start_watch(keeper, queen_url) as watcher:
        job_id = _wait_for_running_job(keeper, queen_url)
        _wait_for_line(watcher, "status")
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=30) == 130
        assert watcher.stderr is not None
        assert "interrupted" in watcher.stderr.read()
    (job,) = [j for j in _jobs(keeper, queen_url) if j["job_id"] == job_id]
    assert job["state"] == "cancelled"


def test_queen_not_running_exits_3_with_one_sentence(keeper, free_tcp_port: int) -> None:
    """Talking to a queen that is not there says what to do and exits 3."""
    result = keeper("--queen-url", f"http://127.0.0.1:{free_tcp_port}", "jobs", "list")
    assert result.returncode == 3
    assert "keeper queen start" in result.stderr and "--queen-url" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_and_finished_jobs_are_clear_errors(keeper, queen_url: str) -> None:
    """An unknown job is a usage error (2); cancelling a finished one exits 1 saying why."""
    unknown = keeper("--queen-url", queen_url, "jobs", "show", "job-nope")
    assert unknown.returncode == 2
    assert "job-nope" in unknown.stderr and "keeper jobs list" in unknown.stderr
    assert keeper("--queen-url", queen_url, "hive", "list").returncode == 0
    (job,) = _jobs(keeper, queen_url)
    cancel = keeper("--queen-url", queen_url, "jobs", "cancel", job["job_id"])
    assert cancel.returncode == 1
    assert "already ended" in cancel.stderr


def test_usage_errors_exit_2(keeper) -> None:
    """An unknown command or option is a usage error, exit 2."""
    assert keeper("frobnicate").returncode == 2
    assert keeper("queen", "start", "--port", "notaport").returncode == 2


def _start_watch(keeper, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keeper",
            "--queen-url",
            url,
            "status",
            "--watch",
            "--interval",
            "0.2",
        ],
        env=keeper.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # SIGINT goes to keeper alone, as Ctrl-C in its own terminal
    )


def _wait_for_running_job(keeper, url: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [j for j in _jobs(keeper, url) if j["state"] == "running"]
        if running:
            return running[0]["job_id"]
    raise AssertionError("no running job appeared on the queen")


def _wait_for_line(proc: subprocess.Popen[str], action: str, timeout: float = 30.0) -> None:
    import selectors

    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), True)
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not selector.select(timeout=deadline - time.monotonic()):
                break
            event = parse_line(proc.stdout.readline())
            if event is not None and event.action == action:
                return
    raise AssertionError(f"keeper printed no {action!r} line within {timeout} s")


def test_job_ids_are_one_path_segment(keeper, queen_url: str) -> None:
    """An id like `../jobs` is looked up as a job, never sent to another route."""
    result = keeper("--queen-url", queen_url, "jobs", "cancel", "../jobs")
    assert result.returncode == 2
    assert "'../jobs'" in result.stderr and "keeper jobs list" in result.stderr
