"""A model no hive can hold alone, served split by layers across two real hives on this
machine: each lends less than the model needs, the queen plans the split, a peer lends
an RPC server on its loopback, and the worker on the other hive loads the model across
both. The user just asks (`keeper infer`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import psutil
import pytest

from jobs.client import JobClient
from tests.support import (
    answer_tiny,
    extra_hive,
    queen_with_hive,
    run_job,
    stop_the_only_worker,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
# Less than either model needs with a worker's default context (4096 tokens x 2 slots):
# builtin:smollm2 about 300 MB, builtin:tiny about 780 KiB.
SMOLLM2_LENT = "200M"
TINY_LENT = "512KiB"


def rpc_servers_of(pid: int) -> list[psutil.Process]:
    """The RPC servers a hive process runs (its `hive._rpc_host` children)."""
    return [
        child
        for child in psutil.Process(pid).children(recursive=True)
        if "hive._rpc_host" in " ".join(child.cmdline())
    ]


def listening_addresses(pids: set[int]) -> set[str]:
    return {
        conn.laddr.ip
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids
    }


def keeper_infer(queen_url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RBEE_HOME": str(home), "RBEE_QUEEN_URL": queen_url, "NO_COLOR": "1"}
    env.pop("RBEE_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "keeper", "infer", "--no-autostart", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def test_keeper_infer_answers_paris_from_smollm2_split_across_two_hives(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_LEND_MEMORY", SMOLLM2_LENT)  # both hives read it at start
    async with (
        queen_with_hive(rbee_home) as (queen, hive),
        extra_hive(queen, tmp_path / "gpu2", "gpu2") as peer,
    ):
        async with JobClient(queen.url) as jobs:  # the plan needs a catalog with the model
            fetched = await run_job(
                jobs, {"operation": "model_download", "model": "builtin:smollm2"}
            )
            assert fetched[-1].data["state"] == "completed", fetched[-1].data
        args = ("--model", "builtin:smollm2", "--temperature", "0", "--max-tokens", "24")
        question = "What is the capital of France?"
        answer = await anyio.to_thread.run_sync(
            lambda: keeper_infer(queen.url, rbee_home, *args, question)
        )
        assert answer.returncode == 0, answer.stderr[-3000:]
        assert "Paris" in answer.stdout, (answer.stdout, answer.stderr[-3000:])
        said = answer.stderr
        assert "more than any one hive lends; splitting it by layers" in said
        assert "Lending this hive's memory to split" in said
        lenders = [
            p
            for p in (hive.process.pid, peer.process.pid)
            if rpc_servers_of(p)  # the peer: not the worker's own hive
        ]
        assert len(lenders) == 1
        servers = {s.pid for s in rpc_servers_of(lenders[0])}
        assert listening_addresses(servers) == {"127.0.0.1"}  # never beyond loopback


async def test_a_split_of_tiny_stops_lending_once_its_worker_is_gone(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """builtin:tiny (2 layers) split one layer per hive answers through the queen; once
    its worker is stopped, the peer's RPC server stops too."""
    monkeypatch.setenv("RBEE_LEND_MEMORY", TINY_LENT)
    async with (
        queen_with_hive(rbee_home) as (queen, hive),
        extra_hive(queen, tmp_path / "gpu2", "gpu2") as peer,
        JobClient(queen.url) as jobs,
    ):
        fetched = await run_job(jobs, {"operation": "model_download", "model": "builtin:tiny"})
        assert fetched[-1].data["state"] == "completed", fetched[-1].data
        events = await answer_tiny(jobs)
        said = " ".join(str(e.data.get("human", "")) for e in events)
        assert "splitting it by layers" in said
        pids = {hive.process.pid, peer.process.pid}
        lender = next(p for p in pids if rpc_servers_of(p))
        server = rpc_servers_of(lender)[0].pid
        await stop_the_only_worker(jobs)
        # The queen notices the worker gone within a beat or two and asks the peer to stop.
        await anyio.to_thread.run_sync(
            lambda: wait_until(lambda: not _running(server), "the peer's RPC server to stop")
        )


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
