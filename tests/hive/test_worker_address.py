"""A hive's workers listen where the hive does and are advertised at the hive's address:
a queen on another machine reaches them there (each asks for its own credential), not
at the hive machine's 127.0.0.1, where no other machine can."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from jobs.client import JobClient
from tests.support import run_job, spawn_hive

ADDRESS = "127.0.0.2"  # another address than 127.0.0.1, as a second machine's would be


@pytest.mark.anyio
async def test_a_worker_listens_and_is_advertised_at_the_hives_address(rbee_home: Path) -> None:
    async with (
        spawn_hive(rbee_home, "--bind", ADDRESS) as hive,
        JobClient(hive.url, token=hive.token) as client,
    ):
        assert hive.url.startswith(f"http://{ADDRESS}:")
        spawned = await run_job(
            client, {"operation": "worker_spawn", "model": "builtin:tiny", "device": "cpu"}
        )
        result = spawned[-1].data["result"]
        assert spawned[-1].data["state"] == "completed", spawned[-1].data
        assert result["url"] == f"http://{ADDRESS}:{result['port']}"
        listening = {
            conn.laddr.ip
            for conn in psutil.net_connections("tcp")
            if conn.status == psutil.CONN_LISTEN and conn.pid == result["pid"]
        }
        assert listening == {ADDRESS}
