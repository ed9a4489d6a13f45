"""Workers spawned through the real hive's own job API: narration in the spawn job,
startup failures, stop, and no orphan after the hive is killed."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import gguf
import httpx
import numpy as np
import psutil
import pytest

from hive.tiny_model import TinyShape, write_tiny_model
from jobs import RbeePaths, worker_credential
from jobs.client import JobClient
from tests.support import narration, run_job, spawn_hive

pytestmark = pytest.mark.anyio

ORPHAN_DEADLINE_S = 10.0  # the worker polls its parent every 0.5 s


async def test_spawn_relays_worker_startup_into_the_job_then_stop(rbee_home: Path) -> None:
    """worker_spawn on builtin:tiny completes once the worker is ready, and its job stream
    holds the worker's own `startup` and `model_load` lines under the worker's actor
    (origin worker:<id>); worker_list shows it, worker_stop ends it, and its log file has
    its lines."""
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        download = await run_job(client, {"operation": "model_download", "model": "builtin:tiny"})
        assert download[-1].state == "completed", download[-1].data
        started = time.perf_counter()
        spawn = await run_job(client, {"operation": "worker_spawn", "model": "builtin:tiny"})
        took = time.perf_counter() - started
        assert spawn[-1].state == "completed", spawn[-1].data
        worker = spawn[-1].data["result"]
        lines = narration(spawn)
        worker_lines = [(a, act) for a, act, _ in lines if a == "llm-worker-rbee"]
        assert ("llm-worker-rbee", "startup") in worker_lines
        assert worker_lines.count(("llm-worker-rbee", "model_load")) == 2  # loading, loaded
        origins = {e.data.get("origin") for e in spawn if e.kind == "narration"} - {None}
        assert origins == {f"worker:{worker['worker_id']}"}
        async with httpx.AsyncClient(trust_env=False) as http:
            health = (await http.get(f"{worker['url']}/health")).json()
        assert health["status"] == "ready" and health["worker_id"] == worker["worker_id"]
        listed = await run_job(client, {"operation": "worker_list"})
        assert [w["worker_id"] for w in listed[-1].data["result"]["workers"]] == [
            worker["worker_id"]
        ]
        state = rbee_home / "state" / "hive-localhost" / "workers" / worker["worker_id"]
        assert await anyio.Path(state / "server.lock").exists()  # the worker holds its folder
        stopped = await run_job(
            client, {"operation": "worker_stop", "worker_id": worker["worker_id"]}
        )
        assert stopped[-1].state == "completed", stopped[-1].data
        assert not psutil.pid_exists(worker["pid"]) or _is_zombie(worker["pid"])
        assert not await anyio.Path(state).exists()  # removed with the worker
        log = await anyio.Path(worker["log"]).read_text()
        assert "] startup" in log and "] model_load" in log
        print(f"worker spawn until ready: {took:.2f} s")


async def test_worker_crashing_at_startup_fails_the_job_quoting_its_failure_once(
    rbee_home: Path, tmp_path: Path
) -> None:
    """A model llama.cpp cannot load (a well-formed GGUF of an architecture it does not
    know, which the hive's file checks pass) makes the worker exit during startup: the
    spawn job fails naming the worker and its exit and quoting the worker's own `failed`
    line once (not its other lines: those are in the job log), and no worker is left."""
    corrupt = tmp_path / "corrupt.gguf"
    writer = gguf.GGUFWriter(corrupt, arch="nonesuch")
    writer.add_tensor("w", np.zeros(64, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        added = await run_job(client, {"operation": "model_download", "model": str(corrupt)})
        assert added[-1].state == "completed", added[-1].data
        spawn = await run_job(client, {"operation": "worker_spawn", "model": str(corrupt)})
        listed = await run_job(client, {"operation": "worker_list"})
    final = spawn[-1]
    assert final.state == "failed"
    error = final.data["error"]
    failed = [h for a, act, h in narration(spawn) if a == "llm-worker-rbee" and act == "failed"]
    assert len(failed) == 1 and "cannot load model" in failed[0]
    assert error.endswith(f"did not start: it exited with code 1; it said: {failed[0]}"), error
    assert error.count("cannot load model") == 1 and "startup" not in error
    assert listed[-1].data["result"]["workers"] == []


async def test_killed_hive_leaves_no_worker_running_and_the_next_cleans_up(
    rbee_home: Path,
) -> None:
    """After the hive is killed with SIGKILL, its worker notices its parent is gone and
    exits on its own within a deadline. Its state folder (its jobs, its prompts) is left
    behind, and the next hive removes it as it starts, and says so."""
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        await run_job(client, {"operation": "model_download", "model": "builtin:tiny"})
        spawn = await run_job(client, {"operation": "worker_spawn", "model": "builtin:tiny"})
        pid = spawn[-1].data["result"]["pid"]
        worker = psutil.Process(pid)
        hive.process.send_signal(signal.SIGKILL)
        await hive.process.wait()
    with anyio.fail_after(ORPHAN_DEADLINE_S):
        while worker.is_running() and not _is_zombie(pid):  # noqa: ASYNC110 - no event for it
            await anyio.sleep(0.05)
    left = RbeePaths.resolve(rbee_home).state / "hive-localhost" / "workers"
    assert [p.name for p in left.iterdir()] == [spawn[-1].data["result"]["worker_id"]]
    async with spawn_hive(rbee_home) as again:
        assert list(left.iterdir()) == []
    assert "worker_cleanup" in again.actions()


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_stopping_the_hive_stops_its_workers(rbee_home: Path) -> None:
    """SIGTERM to the hive stops its workers before the hive exits (exit code 0)."""
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        await run_job(client, {"operation": "model_download", "model": "builtin:tiny"})
        spawn = await run_job(client, {"operation": "worker_spawn", "model": "builtin:tiny"})
        pid = spawn[-1].data["result"]["pid"]
    assert hive.process.returncode == 0, hive.stderr.decode()
    assert _is_zombie(pid) or not psutil.pid_exists(pid)
    assert "worker_spawn" in hive.actions()


async def test_worker_state_follows_its_generation(rbee_home: Path, tmp_path: Path) -> None:
    """While a one-slot worker (worker_spawn's `parallel`) generates, the hive reports it
    `busy` with its slot taken (what heartbeats tell the queen); once the generation is
    cancelled it is `ready` again. The worker takes its own credential, derived from the
    hive's, and nothing else."""

    async def state(client: JobClient) -> str:
        listed = await run_job(client, {"operation": "worker_list"})
        return str(listed[-1].data["result"]["workers"][0]["state"])

    # Wide enough that its answer takes seconds (builtin:tiny's takes milliseconds).
    slow = tmp_path / "slow.gguf"
    write_tiny_model(slow, shape=TinyShape(n_ctx=2048, n_embd=512, n_layer=8, n_ff=2048))
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        op = {"operation": "worker_spawn", "model": str(slow), "parallel": 1}
        spawn = await run_job(client, op)
        worker = spawn[-1].data["result"]
        assert worker["slots"] == 1
        assert await state(client) == "ready"
        assert hive.token is not None
        auth = {"Authorization": f"Bearer {worker_credential(hive.token, worker['worker_id'])}"}
        async with httpx.AsyncClient(base_url=worker["url"], trust_env=False) as http:
            nobody = await http.post("/v1/inference", json={"prompt": "a"})
            assert nobody.status_code == 401
        async with httpx.AsyncClient(base_url=worker["url"], trust_env=False, headers=auth) as http:
            body = {"prompt": "a", "max_tokens": 2000, "seed": 1}
            job_id = (await http.post("/v1/inference", json=body)).json()["job_id"]
            with anyio.fail_after(10):
                while await state(client) != "busy":  # noqa: ASYNC110 - polled API
                    await anyio.sleep(0.05)
            await http.delete(f"/v1/jobs/{job_id}")
        with anyio.fail_after(10):
            while await state(client) != "ready":  # noqa: ASYNC110 - polled API
                await anyio.sleep(0.05)
