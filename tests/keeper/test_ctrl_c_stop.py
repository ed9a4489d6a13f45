"""Ctrl-C while `keeper queen stop` / `keeper hive stop` waits out a daemon's grace period.

The daemon is frozen (SIGSTOP), so SIGTERM does nothing and the stop would wait 5 s before
SIGKILL. Ctrl-C then is a second stop request: as in `keeper run`, it kills at once. The
keeper must not leave a hung daemon and its pidfile behind when it exits 130.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from keeper.daemons import PidFile
from keeper.launch import ABANDON_GRACE_S
from narration_core.proctree import STOP_GRACE_S
from tests.support import start_in_background, wait_until


@pytest.mark.parametrize("daemon", ["queen", "hive"])
def test_ctrl_c_during_a_stop_kills_the_daemon_at_once(
    keeper, rbee_home: Path, free_tcp_port: int, daemon: str
) -> None:
    """Ctrl-C while the stop waits for a daemon that ignores SIGTERM: it is SIGKILLed at once,
    its pidfile removed, exit 130, no traceback."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    started = keeper("--queen-url", url, daemon, "start", "--port", str(free_tcp_port))
    assert started.returncode == 0, started.stderr
    pidfile = PidFile(rbee_home / "run", "queen" if daemon == "queen" else "hive-localhost")
    record = pidfile.read()
    assert record is not None
    frozen = psutil.Process(record.pid)
    frozen.suspend()
    stopping = start_in_background(keeper, "--queen-url", url, daemon, "stop")
    try:
        assert stopping.stdout is not None
        assert "with SIGTERM" in stopping.stdout.readline()  # the grace period has begun
        began = time.monotonic()
        stopping.send_signal(signal.SIGINT)
        _, err = stopping.communicate(timeout=STOP_GRACE_S * 4)
        took = time.monotonic() - began
        assert stopping.returncode == 130, err
        assert err.splitlines()[-1] == "keeper: interrupted", err
        wait_until(lambda: not psutil.pid_exists(record.pid), "the daemon to be gone")
        assert took < STOP_GRACE_S - ABANDON_GRACE_S, took  # killed, not waited out
        assert pidfile.read() is None
    finally:
        stopping.kill()
        if frozen.is_running():
            frozen.kill()
