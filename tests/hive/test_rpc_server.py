"""The RPC servers a hive lends to a split model: ggml's own server from the installed
wheel, on loopback only, dying with the hive; and the capabilities that announce it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from hive._rpc_server import RpcServers
from hive.capabilities import capabilities
from tests.support import all_gone, wait_until
from worker._rpc import probe, rpc_protocol

pytestmark = [pytest.mark.anyio, pytest.mark.process]

# A stand-in hive: the hive's own RpcServers in a process the test can kill -9.
HIVE = """
import sys, anyio
from pathlib import Path
from hive._rpc_server import RpcServers

async def main():
    async with RpcServers(Path(sys.argv[1])).running() as servers:
        server = await servers.start()
        print("RPC", server.pid, server.port, flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


def _listening(pid: int) -> list[tuple[str, int]]:
    return [
        (s.laddr.ip, s.laddr.port)
        for s in psutil.Process(pid).net_connections(kind="inet")
        if s.status == psutil.CONN_LISTEN
    ]


def test_the_hive_reports_that_it_can_lend_memory_over_rpc() -> None:
    """`GET /v1/capabilities` tells the queen this hive's build can split, and which
    llama-cpp-python and RPC protocol a peer must match."""
    found = capabilities()
    assert found["supports_rpc"] is True, found.get("rpc_reason")
    assert found["llama_cpp_version"] == "0.3.36"
    assert found["rpc_protocol"] == rpc_protocol()
    assert found["rpc_protocol"].count(".") == 2
    assert "rpc_reason" not in found


async def test_rpc_servers_listen_on_loopback_only_and_speak_the_workers_protocol(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache" / "rpc"
    async with RpcServers(cache).running() as servers:
        first, second = await servers.start(), await servers.start()
        assert first.port != second.port
        for server in (first, second):
            assert _listening(server.pid) == [("127.0.0.1", server.port)]
            assert server.endpoint == f"127.0.0.1:{server.port}"
            assert probe(server.endpoint) == rpc_protocol()
        await servers.stop(first)
        assert all_gone([first.pid])
        assert servers.servers == [second]
    assert second.exited.is_set() and all_gone([second.pid])
    assert cache.is_dir() and cache.stat().st_mode & 0o077 == 0


def test_killing_the_hive_with_sigkill_kills_its_rpc_server(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HIVE, str(tmp_path / "rpc")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "RBEE_HOME": str(tmp_path)},
    ) as hive:
        try:
            pid, port = _rpc_server_of(hive)
            assert psutil.Process(pid).ppid() == hive.pid
            assert _listening(pid) == [("127.0.0.1", port)]
            os.kill(hive.pid, signal.SIGKILL)
            hive.wait()
            wait_until(lambda: all_gone([pid]), "the RPC server to die with its hive")
        finally:
            if hive.poll() is None:
                hive.kill()


def _rpc_server_of(hive: subprocess.Popen[str]) -> tuple[int, int]:
    """The pid and port the stand-in hive prints once its RPC server listens."""
    assert hive.stdout is not None
    for line in hive.stdout:  # the hive narrates first; the marker ends its start
        if line.startswith("RPC "):
            pid, port = (int(x) for x in line.split()[1:])
            return pid, port
    pytest.fail(f"the stand-in hive exited with {hive.wait()} before its RPC server listened")
