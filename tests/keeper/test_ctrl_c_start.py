"""Ctrl-C while `keeper queen start` / `keeper hive start` waits for the daemon's /health.

The daemon is frozen (SIGSTOP) right after it is spawned, so it cannot become healthy:
the keeper is then where a slow start keeps it. Ctrl-C there abandons the start: the
half-started daemon is stopped and its pidfile removed, exit 130, as when the start times
out; nothing is left running that the user thinks was never started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from keeper.daemons import PidFile
from tests.conftest import KeeperRunner

DEADLINE_S = 30.0  # keeper start-up, then the stop: SIGTERM, 5 s of grace, SIGKILL


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def start_in_background(runner: KeeperRunner, *args: str) -> subprocess.Popen[str]:
    """`keeper ARGS` running on its own (Ctrl-C live, as in a terminal), output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "keeper", *args],
        env=runner.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def freeze_once_spawned(pidfile: PidFile) -> psutil.Process:
    """The daemon `pidfile` names, frozen (SIGSTOP) as soon as the pidfile appears: spawned,
    still importing, not yet bound to its port."""
    wait_until(lambda: pidfile.read() is not None, "the pidfile")
    record = pidfile.read()
    assert record is not None
    frozen = psutil.Process(record.pid)
    frozen.suspend()
    return frozen


@pytest.mark.parametrize("daemon", ["queen", "hive"])
def test_ctrl_c_during_a_start_stops_the_half_started_daemon(
    keeper, rbee_home: Path, free_tcp_port: int, daemon: str
) -> None:
    """Ctrl-C before the daemon is healthy: exit 130, no traceback, daemon stopped, no pidfile."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    name = "queen" if daemon == "queen" else "hive-localhost"
    pidfile = PidFile(rbee_home / "run", name)
    process = start_in_background(
        keeper, "--queen-url", url, daemon, "start", "--port", str(free_tcp_port)
    )
    started: psutil.Process | None = None
    try:
        started = freeze_once_spawned(pidfile)  # never healthy: the keeper keeps waiting
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 130, err
        assert "Traceback" not in err
        assert err.splitlines()[-1] == "keeper: interrupted"
        assert not started.is_running() or started.status() == psutil.STATUS_ZOMBIE
        assert pidfile.read() is None
    finally:
        process.kill()
        if started is not None and started.is_running():
            started.kill()  # a failed run leaves none behind
