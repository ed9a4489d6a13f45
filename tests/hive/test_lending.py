"""A real hive lends memory to a split: `rpc_serve` starts one RPC server per split on the
hive's loopback, `rpc_stop` stops it, and the hive's exit takes its servers along."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from jobs import InvalidRequest
from jobs.client import JobClient
from tests.support import run_job, spawn_hive, wait_until


def listeners(endpoint: str) -> list[str]:
    """The addresses anything listens on at `endpoint`'s port (any interface)."""
    port = int(endpoint.rsplit(":", 1)[1])
    return [
        conn.laddr.ip
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    ]


@pytest.mark.anyio
async def test_a_split_gets_one_loopback_server_until_it_is_stopped(rbee_home: Path) -> None:
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        served = await run_job(client, {"operation": "rpc_serve", "split_id": "s1"})
        again = await run_job(client, {"operation": "rpc_serve", "split_id": "s1"})
        other = await run_job(client, {"operation": "rpc_serve", "split_id": "s2"})
        first = served[-1].data["result"]
        assert served[-1].state == "completed", served[-1].data
        assert again[-1].data["result"]["endpoint"] == first["endpoint"]  # the same server
        assert other[-1].data["result"]["endpoint"] != first["endpoint"]
        assert listeners(first["endpoint"]) == ["127.0.0.1"]
        said = " ".join(e.data.get("human", "") for e in served)
        assert "Lending this hive's memory to split s1" in said

        stopped = await run_job(client, {"operation": "rpc_stop", "split_id": "s1"})
        assert stopped[-1].state == "completed"
        assert listeners(first["endpoint"]) == []
        assert not psutil.pid_exists(first["pid"]) or (
            psutil.Process(first["pid"]).status() == psutil.STATUS_ZOMBIE
        )
        with pytest.raises(InvalidRequest, match="lends nothing to split s1") as refused:
            await client.submit({"operation": "rpc_stop", "split_id": "s1"})
        assert refused.value.status == 404
        second_pid = other[-1].data["result"]["pid"]
    # The hive stopped (SIGTERM): the server it still ran for s2 went with it.
    wait_until(lambda: not psutil.pid_exists(second_pid), "the hive's RPC server to exit")
