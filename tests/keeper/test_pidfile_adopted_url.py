"""A pidfile the keeper writes again for a daemon that lost it (keeper.lost_pidfile) names
the port the daemon really listens on, whatever its command line says: `--port 0`
(any free port), `--port=N`, or no --port at all (the program's default)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest

from keeper.daemons import PidFile
from tests.support import spawn_hive

pytestmark = pytest.mark.anyio


async def test_a_hive_started_by_hand_on_any_port_is_found_at_that_port(
    keeper, rbee_home: Path
) -> None:
    """This home's hive, started by hand with --port 0 and no pidfile: `keeper hive start
    --port P` (the port it took) says it runs, and the pidfile written again records P."""
    async with spawn_hive(rbee_home, "--hive-id", "localhost") as hive:
        port = urlsplit(hive.url).port
        started = await anyio.to_thread.run_sync(
            lambda: keeper("hive", "start", "--port", str(port))
        )
        record = PidFile(rbee_home / "run", "hive-localhost").read()
    assert started.returncode == 0, started.stderr
    assert "already running" in started.stdout, started.stdout
    assert record is not None and urlsplit(record.url).port == port, record


def test_queen_start_on_another_port_finds_this_homes_queen_without_its_pidfile(
    keeper, rbee_home: Path, free_tcp_port: int
) -> None:
    """Pidfile deleted, `queen start --port Q` for a queen running on P: it says the queen
    runs at P (exit 1, as with its pidfile) and leaves that queen's log where it is; it
    spawned a second queen that died on the state lock and rotated the log away."""
    import socket

    with socket.socket() as sock:  # a second free port, for the start that must not happen
        sock.bind(("127.0.0.1", 0))
        other = sock.getsockname()[1]
    started = keeper("queen", "start", "--port", str(free_tcp_port))
    assert started.returncode == 0, started.stderr
    pidfile = PidFile(rbee_home / "run", "queen")
    record = pidfile.read()
    assert record is not None
    try:
        pidfile.remove()
        again = keeper("queen", "start", "--port", str(other))
        assert again.returncode == 1, again.stdout + again.stderr
        assert f"already runs at http://127.0.0.1:{free_tcp_port}" in again.stderr
        assert not (rbee_home / "logs" / "queen.log.1").exists()
    finally:
        keeper("queen", "stop")
