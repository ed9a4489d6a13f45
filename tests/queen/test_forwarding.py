"""Queen forwarding: a hive operation runs as a hive job whose stream the queen job relays.

The hive here is a real job server on the shared shell (jobs.server) with handlers that
narrate like rbee-hive and pass on a worker's lines, so these tests need no model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs import HiveBeat, operation_json
from jobs.client import JobClient
from jobs.server import Job, ServerConfig, bind_socket, create_app, open_job_server, socket_url
from narration_core import Narrator, relay_line
from queen.forward import HIVE_OPERATIONS
from tests.support import BeatAuth, queen_settings, start_queen

HIVE = Narrator("rbee-hive")


@asynccontextmanager
async def stand_in_hive(state: Path, seen: list[dict[str, Any]]) -> AsyncIterator[str]:
    """A job server answering every hive operation; records each operation it ran."""

    async def run(op: Any, job: Job) -> dict[str, Any]:
        seen.append(operation_json(op))
        HIVE.action(op.operation).human(f"Doing {op.operation}").emit()
        if op.operation == "worker_spawn":
            for line in (
                "[llm-worker-rbee] startup: Worker w-1 starting",
                "[llm-worker-rbee] model_load: Loaded tiny",
            ):
                relay_line(line, "stdout", actor="llm-worker-rbee", origin="worker:w-1")
        return {"did": op.operation}

    app = create_app(ServerConfig("rbee-hive", "test", state), dict.fromkeys(HIVE_OPERATIONS, run))
    sock = bind_socket("127.0.0.1", 0)
    async with open_job_server(app, sock):
        yield socket_url(sock)


async def run_job(url: str, operation: dict[str, Any]) -> tuple[str, list[Any]]:
    async with JobClient(url) as client:
        job_id = await client.submit(operation)
        return job_id, [event async for event in client.stream(job_id)]


@pytest.mark.anyio
async def test_worker_spawn_reaches_the_keeper_with_the_workers_own_lines(
    rbee_home: Path, tmp_path: Path
) -> None:
    """A hive learned from a beat runs worker_spawn; the queen job carries the hive's and the
    worker's narration with their own actors, `hive:<id>` origins and the queen job's id."""
    seen: list[dict[str, Any]] = []
    async with (
        stand_in_hive(tmp_path / "hive", seen) as hive_url,
        start_queen(queen_settings(rbee_home)) as queen,
    ):
        beat = HiveBeat(hive_id="gpu1", url=hive_url, version="t", ts=time.time())
        async with httpx.AsyncClient(auth=BeatAuth(rbee_home)) as http:
            await http.post(
                f"{queen.url}/v1/heartbeats",
                content=beat.model_dump_json(),
                headers={"content-type": "application/json"},
            )
        op = {"operation": "worker_spawn", "hive_id": "gpu1", "model": "tiny", "device": "cpu"}
        job_id, events = await run_job(queen.url, op)
    assert events[-1].data["state"] == "completed"
    assert events[-1].data["result"] == {"did": "worker_spawn"}
    assert seen == [{**op, "parallel": None, "threads": None, "ctx_size": None}]
    lines = [
        (e.data["actor"], e.data["action"], e.data.get("origin"), e.data["job_id"])
        for e in events
        if e.kind == "narration"
    ]
    assert ("rbee-hive", "worker_spawn", "hive:gpu1", job_id) in lines
    assert ("llm-worker-rbee", "startup", "hive:gpu1/worker:w-1", job_id) in lines
    assert ("llm-worker-rbee", "model_load", "hive:gpu1/worker:w-1", job_id) in lines
    assert ("queen-rbee", "forward", None, job_id) in lines


@pytest.mark.anyio
async def test_every_hive_operation_is_forwarded_as_sent(rbee_home: Path, tmp_path: Path) -> None:
    """Each hive operation arrives at the hive named in the config with its fields intact."""
    operations = [
        {"operation": "hive_status", "hive_id": "gpu1"},
        {"operation": "worker_list", "hive_id": "gpu1"},
        {"operation": "worker_stop", "hive_id": "gpu1", "worker_id": "w-7"},
        {"operation": "model_download", "hive_id": "gpu1", "model": "builtin:tiny"},
        {"operation": "model_list", "hive_id": "gpu1"},
        {"operation": "model_delete", "hive_id": "gpu1", "model": "tiny"},
    ]
    seen: list[dict[str, Any]] = []
    async with stand_in_hive(tmp_path / "hive", seen) as hive_url:
        settings = dataclasses.replace(queen_settings(rbee_home), hives={"gpu1": hive_url})
        async with start_queen(settings) as queen:
            for op in operations:
                _, events = await run_job(queen.url, op)
                assert events[-1].data["result"] == {"did": op["operation"]}
    assert [
        {k: v for k, v in s.items() if k in op} for s, op in zip(seen, operations, strict=True)
    ] == operations
    assert {s["operation"] for s in seen} | {"worker_spawn"} == set(HIVE_OPERATIONS)
