"""Two RBEE_HOMEs starting a queen on the same port at the same moment.

The start lock is per RBEE_HOME, so both keepers may find the port free and spawn. The
second queen then cannot bind, but its keeper may already see a /health answer on the
port: the other home's queen's. It must not take that for its own ("ready", exit 0, a
pidfile naming a dead process, its jobs going to another home's queen).

The interleaving is forced: home B's queen is frozen (SIGSTOP) right after it is spawned,
before it binds; home A's queen then starts and serves; B's queen is thawed and fails.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from keeper.daemons import PidFile
from tests.support import KeeperRunner, freeze_once_spawned, start_in_background

DEADLINE_S = 30.0  # keeper start-up, then B's queen failing to bind
HEALTH_PROBES_S = 1.0  # several of the keeper's /health probes (every 0.2 s)


def test_a_start_does_not_take_another_homes_queen_for_its_own(
    tmp_path: Path, free_tcp_port: int
) -> None:
    """B's queen cannot bind (A's holds the port): B's keeper exits 1, not 'ready', and
    leaves no pidfile; A's queen serves on."""
    a, b = KeeperRunner(tmp_path / "a"), KeeperRunner(tmp_path / "b")
    start = ["queen", "start", "--port", str(free_tcp_port)]
    b_pidfile = PidFile(b.home / "run", "queen")
    keeper_b = start_in_background(b, *start)
    frozen: psutil.Process | None = None
    try:
        frozen = freeze_once_spawned(b_pidfile)  # spawned, not yet bound

        started_a = a(*start)
        assert started_a.returncode == 0, started_a.stderr
        time.sleep(HEALTH_PROBES_S)  # B's keeper probes A's queen meanwhile
        frozen.resume()

        out, err = keeper_b.communicate(timeout=DEADLINE_S)
        assert keeper_b.returncode == 1, out + err
        assert "before it was ready" in err, err
        assert "is ready" not in out
        assert b_pidfile.read() is None
        status_a = a("queen", "status")
        assert status_a.returncode == 0, status_a.stdout + status_a.stderr
    finally:
        keeper_b.kill()
        if frozen is not None and frozen.is_running():
            frozen.kill()
        a("queen", "stop")
        b("queen", "stop")
