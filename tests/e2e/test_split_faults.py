"""Faults of a split (docs/splitting.md, "When a peer fails"): builtin:tiny split one layer
per hive across two real hives on this machine, each lending less than the model needs.

A peer whose RPC server is killed, or frozen (SIGSTOP), mid-generation ends the job within
10 s with an error naming that server; the next request is served by a split placed
afresh (a new worker, a new RPC server), and the frozen server is stopped once its worker
is gone. A hive killed with SIGKILL takes its RPC server along."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from jobs import JobEvent
from jobs.client import JobClient
from tests.support import (
    RunningProgram,
    all_gone,
    await_until,
    extra_hive,
    queen_with_hive,
    run_job,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
TINY_LENT = "512KiB"  # less than builtin:tiny needs with a worker's default context
PEER_FAULT_S = 10.0  # what a split promises: a failed peer ends the job within this
EOS = 2  # builtin:tiny's end-of-sequence token (hive/tiny_model.py)
# Thousands of tokens, none of them the end: a generation still running when its peer fails.
ENDLESS = {"operation": "infer", "model": "builtin:tiny", "prompt": "the hive", "seed": 7,
           "max_tokens": 4000, "logit_bias": {str(EOS): -100}}  # fmt: skip
SHORT = {"operation": "infer", "model": "builtin:tiny", "prompt": "the hive", "seed": 3,
         "max_tokens": 8}  # fmt: skip


@dataclass
class Split:
    """Two hives and the queen's client, with builtin:tiny in the catalog."""

    jobs: JobClient
    hives: tuple[RunningProgram, RunningProgram]
    ids: tuple[str, str] = ("localhost", "gpu2")  # the hives' ids, in the same order

    def lender(self) -> tuple[RunningProgram, psutil.Process]:
        """The hive lending its memory, and its one RPC server."""
        for hive in self.hives:
            servers = rpc_servers_of(hive.process.pid)
            if servers:
                (server,) = servers
                return hive, server
        raise AssertionError("no hive runs an RPC server")


@asynccontextmanager
async def tiny_split(home: Path, tmp_path: Path, mp: pytest.MonkeyPatch) -> AsyncIterator[Split]:
    mp.setenv("RBEE_LEND_MEMORY", TINY_LENT)  # both hives read it at start
    async with (
        queen_with_hive(home) as (queen, hive),
        extra_hive(queen, tmp_path / "gpu2", "gpu2") as peer,
        JobClient(queen.url) as jobs,
    ):
        fetched = await run_job(jobs, {"operation": "model_download", "model": "builtin:tiny"})
        assert fetched[-1].data["state"] == "completed", fetched[-1].data
        yield Split(jobs, (hive, peer))


def rpc_servers_of(pid: int) -> list[psutil.Process]:
    """The RPC servers a hive process runs (its `hive._rpc_host` children)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "hive._rpc_host" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue  # exited meanwhile
    return found


def endpoint_of(server: psutil.Process) -> str:
    (listening,) = [c for c in server.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    return f"{listening.laddr.ip}:{listening.laddr.port}"


async def workers(jobs: JobClient) -> set[str]:
    """The ids of the workers the queen knows of now."""
    status = await run_job(jobs, {"operation": "queen_status"})
    return {str(w["worker_id"]) for w in status[-1].data["result"]["workers"]}


async def fail_mid_generation(split: Split, fault: signal.Signals) -> dict[str, Any]:
    """Start an endless generation, send `fault` to the peer's RPC server once the first
    token is out, and return how the job ended: its final data, `after_s` (from the fault
    to the end), the server's `endpoint`, `pid` and hive (`lent_by`), the `worker` that
    generated and the `workers_hive` it ran on."""
    events: list[JobEvent] = []
    first = anyio.Event()
    job_id = await split.jobs.submit(ENDLESS)

    async def follow() -> None:
        async for event in split.jobs.stream(job_id):
            events.append(event)
            if event.kind == "token":
                first.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        with anyio.fail_after(120):  # the split placed, the worker loaded
            await first.wait()
        (worker,) = await workers(split.jobs)
        lender, server = split.lender()
        endpoint = endpoint_of(server)
        workers_hive = next(h for h in split.hives if h is not lender)
        server.send_signal(fault)
        faulted = time.monotonic()
        with anyio.fail_after(30):  # far beyond the promise: the assertion below says how far
            while not events or events[-1].data.get("state") not in ("completed", "failed"):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        ended = time.monotonic()
    final = events[-1].data
    tokens = sum(1 for e in events if e.kind == "token")
    assert tokens < ENDLESS["max_tokens"], "the generation ended before the fault"
    return {**final, "after_s": ended - faulted, "endpoint": endpoint, "pid": server.pid,
            "lent_by": split.ids[split.hives.index(lender)], "worker": worker,
            "workers_hive": workers_hive}  # fmt: skip


async def assert_served_afresh(split: Split, before: dict[str, Any]) -> None:
    """The next request is answered by a new split: another worker, another RPC server."""
    events = await run_job(split.jobs, SHORT)
    assert events[-1].data["state"] == "completed", events[-1].data
    assert any(e.kind == "token" for e in events)
    serving = await workers(split.jobs)
    assert serving and before["worker"] not in serving, serving
    _, server = split.lender()
    assert server.pid != before["pid"]


async def test_a_peer_killed_mid_generation_fails_the_job_naming_it_and_the_next_is_served(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with tiny_split(rbee_home, tmp_path, monkeypatch) as split:
        ended = await fail_mid_generation(split, signal.SIGKILL)
        assert ended["state"] == "failed", ended
        error = ended["error"]
        peer = f"{ended['endpoint']} (hive {ended['lent_by']})"
        assert f"its RPC peer {peer} went away" in error, error
        assert ended["worker"] in error, error
        assert ended["after_s"] < PEER_FAULT_S, ended
        # The worker's hive says the same in its own words.
        said = ended["workers_hive"].lines
        await await_until(lambda: any("worker_exit" in line and peer in line for line in said))
        await assert_served_afresh(split, ended)


async def test_a_peer_frozen_mid_generation_fails_the_job_naming_it_and_is_stopped(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with tiny_split(rbee_home, tmp_path, monkeypatch) as split:
        ended = await fail_mid_generation(split, signal.SIGSTOP)
        assert ended["state"] == "failed", ended
        error = ended["error"]
        peer = f"{ended['endpoint']} (hive {ended['lent_by']})"
        assert f"its RPC peer {peer} stopped answering" in error, error
        assert ended["after_s"] < PEER_FAULT_S, ended
        # Its worker gone, the queen has the peer stop lending: the frozen server is ended.
        await anyio.to_thread.run_sync(
            lambda: wait_until(lambda: all_gone([ended["pid"]]), "the frozen RPC server to end")
        )
        await assert_served_afresh(split, ended)


async def test_no_rpc_server_outlives_its_hive_killed_with_sigkill(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with tiny_split(rbee_home, tmp_path, monkeypatch) as split:
        events = await run_job(split.jobs, SHORT)
        assert events[-1].data["state"] == "completed", events[-1].data
        hive, server = split.lender()
        os.kill(hive.process.pid, signal.SIGKILL)
        await anyio.to_thread.run_sync(
            lambda: wait_until(
                lambda: all_gone([server.pid]), "the RPC server to die with its hive"
            )
        )
