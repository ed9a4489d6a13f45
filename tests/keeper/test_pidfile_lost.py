"""This RBEE_HOME's queen runs but its pidfile is gone (a tmp cleaner, a hand, a crash
between spawn and write): `keeper queen stop` must still stop it.

`queen start` already recognises such a queen (it holds this home's state lock) and writes
the pidfile again; `queen status` reports it running. A stop that said "not running" and
exited 0 would leave it serving behind the user's back.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from keeper.daemons import PidFile
from tests.keeper.test_ctrl_c_start import wait_until


def test_stop_finds_this_homes_queen_without_its_pidfile(
    keeper, rbee_home: Path, free_tcp_port: int
) -> None:
    """Pidfile deleted: `queen stop` stops the queen that holds this home's state lock."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    started = keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
    assert started.returncode == 0, started.stderr
    pidfile = PidFile(rbee_home / "run", "queen")
    record = pidfile.read()
    assert record is not None
    pidfile.remove()
    try:
        stopped = keeper("--queen-url", url, "queen", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "Queen stopped" in stopped.stdout, stopped.stdout
        wait_until(lambda: not psutil.pid_exists(record.pid), "the queen to be gone")
        assert pidfile.read() is None
    finally:
        if psutil.pid_exists(record.pid):
            psutil.Process(record.pid).kill()
