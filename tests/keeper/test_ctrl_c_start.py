"""Ctrl-C while `keeper queen start` / `keeper hive start` waits for the daemon's /health.

The daemon is frozen (SIGSTOP) right after it is spawned, so it cannot become healthy:
the keeper is then where a slow start keeps it. Ctrl-C there abandons the start: the
half-started daemon is stopped and its pidfile removed, exit 130, as when the start times
out; nothing is left running that the user thinks was never started.
"""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest

from keeper.daemons import PidFile
from tests.support import freeze_once_spawned, start_in_background

DEADLINE_S = 30.0  # keeper start-up, then the stop: SIGTERM, 5 s of grace, SIGKILL


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
