"""This RBEE_HOME's queen or hive runs but its pidfile is gone (a tmp cleaner, a hand, a
crash between spawn and write): `stop` must still stop it, `start` must not start another.

The daemon holds its state folder's lock: that is how the keeper knows it is this home's.
A stop that said "not running" and exited 0 would leave it serving behind the user's back;
a hive start said its port was "taken by another program".
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from keeper.daemons import PidFile
from tests.support import wait_until


@pytest.mark.parametrize("daemon", ["queen", "hive"])
def test_stop_finds_this_homes_daemon_without_its_pidfile(
    keeper, rbee_home: Path, free_tcp_port: int, daemon: str
) -> None:
    """Pidfile deleted: `start` says it runs, `stop` stops the process that holds this home's
    state lock."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    start = ("--queen-url", url, daemon, "start", "--port", str(free_tcp_port))
    started = keeper(*start)
    assert started.returncode == 0, started.stderr
    pidfile = PidFile(rbee_home / "run", "queen" if daemon == "queen" else "hive-localhost")
    record = pidfile.read()
    assert record is not None
    try:
        pidfile.remove()
        again = keeper(*start)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout, again.stdout
        pidfile.remove()
        stopped = keeper("--queen-url", url, daemon, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"{daemon.capitalize()} " in stopped.stdout and " stopped" in stopped.stdout
        wait_until(lambda: not psutil.pid_exists(record.pid), f"the {daemon} to be gone")
        assert pidfile.read() is None
    finally:
        if psutil.pid_exists(record.pid):
            psutil.Process(record.pid).kill()
