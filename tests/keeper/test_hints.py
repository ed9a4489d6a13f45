"""Hints a user can act on: the `--hive` a job on another hive needs, and a start command
with a free port when a port is taken, whatever command ran into it."""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support import RunningProgram, spawn_program, url_of

REMOTE = "gpu1"  # a hive that is not localhost (a second rbee-hive on this machine)
DEADLINE_S = 30.0  # for the queen to show what a hive's beats told it, on a busy machine
POLL_S = 0.1


async def _keeper(keeper: Any, *args: str) -> Any:
    return await anyio.to_thread.run_sync(lambda: keeper(*args))


@asynccontextmanager
async def queen_and_remote_hive(
    keeper: Any, rbee_home: Path, queen_port: int
) -> AsyncIterator[RunningProgram]:
    """A queen started with the keeper and a hive `gpu1` beating to it, as `keeper hive
    start gpu1` leaves one on another machine; both stopped after."""
    started = await _keeper(keeper, "queen", "start", "--port", str(queen_port))
    assert started.returncode == 0, started.stderr
    try:
        argv = [
            *(sys.executable, "-m", "hive", "--hive-id", REMOTE, "--port", "0"),
            *("--queen-url", f"http://127.0.0.1:{queen_port}", "--beat-interval", "0.2"),
        ]
        async with spawn_program(argv, home=rbee_home, ready=url_of("ready")) as hive:
            await _wait_status(keeper, lambda s: any(h["hive_id"] == REMOTE for h in s["hives"]))
            yield hive
    finally:
        await _keeper(keeper, "hive", "stop")
        await _keeper(keeper, "queen", "stop")


async def _wait_status(keeper: Any, holds: Any) -> dict[str, Any]:
    """The queen's status snapshot (`keeper status --json`) once `holds(snapshot)`."""
    with anyio.fail_after(DEADLINE_S):
        while True:
            shown = await _keeper(keeper, "status", "--json")
            assert shown.returncode == 0, shown.stderr
            snapshot = json.loads(shown.stdout.splitlines()[-1])["result"]
            if holds(snapshot):
                return dict(snapshot)
            await anyio.sleep(POLL_S)


@pytest.mark.anyio
async def test_a_model_missing_on_a_remote_hive_is_downloaded_with_hive(
    keeper: Any, rbee_home: Path, free_tcp_port: int
) -> None:
    """`worker spawn --hive gpu1` of a catalog id gpu1 lacks says to download it there:
    the commands carry `--hive gpu1`, not the bare ones that act on localhost."""
    async with queen_and_remote_hive(keeper, rbee_home, free_tcp_port):
        failed = await _keeper(
            keeper, "worker", "spawn", "--hive", REMOTE, "--model", "nothere", "--no-autostart"
        )
    assert failed.returncode == 1, failed.stderr
    said = failed.stderr.strip().splitlines()[-1]
    assert "model 'nothere' is not in this hive's catalog" in said
    assert f"`keeper model download REF --hive {REMOTE}`" in said
    assert f"`keeper model list --hive {REMOTE}`" in said
    assert "`keeper model list`" not in said


@pytest.mark.anyio
async def test_stopping_a_worker_on_the_wrong_hive_names_the_one_that_runs_it(
    keeper: Any, rbee_home: Path, free_tcp_port_factory: Any
) -> None:
    """`worker stop ID` without --hive for a worker on gpu1 says gpu1 runs it, with the
    command that stops it there, both when no local hive runs (it is unreachable) and when
    one does (it has no such worker); that command works. A worker no hive has gets the
    hive's own answer, which suggests --hive."""
    queen_port, hive_port = free_tcp_port_factory(), free_tcp_port_factory()
    async with queen_and_remote_hive(keeper, rbee_home, queen_port):
        spawned = await _keeper(
            keeper, "worker", "spawn", "--hive", REMOTE, "--model", "builtin:tiny", "--json"
        )
        assert spawned.returncode == 0, spawned.stderr
        worker = json.loads(spawned.stdout.splitlines()[-1])["result"]["worker_id"]
        await _wait_status(
            keeper,
            lambda s: any(w["worker_id"] == worker for w in s.get("workers", [])),
        )
        no_local_hive = await _keeper(keeper, "worker", "stop", worker)
        local = await _keeper(keeper, "hive", "start", "--port", str(hive_port))
        assert local.returncode == 0, local.stderr
        wrong_hive = await _keeper(keeper, "worker", "stop", worker)
        nowhere = await _keeper(keeper, "worker", "stop", "w-nowhere")
        stopped = await _keeper(keeper, "worker", "stop", worker, "--hive", REMOTE)
    for result in (no_local_hive, wrong_hive):
        assert result.returncode == 2, result.stderr
        assert f"worker {worker!r} is not on hive localhost: it runs on hive {REMOTE}" in (
            result.stderr
        )
        assert f"`keeper worker stop {worker} --hive {REMOTE}`" in result.stderr
    assert nowhere.returncode == 1, nowhere.stderr
    assert "no worker 'w-nowhere' on this hive" in nowhere.stderr
    assert "name that one with --hive" in nowhere.stderr
    assert stopped.returncode == 0, stopped.stderr


@pytest.fixture
def port_held_by_another_program(free_tcp_port: int) -> Iterator[int]:
    """A loopback port something that is not rbee listens on (this test process)."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_tcp_port))
        squatter.listen()
        yield free_tcp_port


def test_a_port_taken_under_infer_names_a_start_command_that_works(
    keeper: Any, port_held_by_another_program: int
) -> None:
    """`keeper infer` (no --port option) starting a queen on a taken port says to stop what
    holds it or to run `keeper queen start --port N` with a free N, not "pass another
    --port"; that command then starts the queen."""
    taken = port_held_by_another_program
    url = f"http://127.0.0.1:{taken}"
    result = keeper("infer", "--queen-url", url, "--model", "builtin:tiny", "hello")
    assert result.returncode == 3, result.stderr
    assert f"port {taken} on 127.0.0.1 is taken by another program" in result.stderr
    assert "another --port" not in result.stderr
    hint = re.search(r"`keeper queen start --port (\d+)`", result.stderr)
    assert hint is not None, result.stderr
    start = keeper("queen", "start", "--port", hint[1])
    try:
        assert start.returncode == 0, start.stderr
    finally:
        keeper("queen", "stop")
