"""The real llm-worker-rbee process, and prompts sent to it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx

from hive.supervisor import free_port
from jobs import JobEvent
from jobs.client import JobClient
from tests.support._programs import RunningProgram, spawn_program, url_of


@asynccontextmanager
async def spawn_worker(home: Path, model: Path) -> AsyncIterator[RunningProgram]:
    """Run the real worker on `model` and a free port until it listens; SIGTERM on exit."""
    argv = [sys.executable, "-m", "worker", "--model", str(model), "--port", str(free_port())]
    argv += ["--worker-id", "w-test"]
    async with spawn_program(argv, home=home, ready=url_of("listen"), merge_stderr=True) as w:
        yield w


async def infer(url: str, prompt: str, **fields: object) -> list[JobEvent]:
    """POST /v1/inference and read the job's stream to its end."""
    async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
        reply = await http.post("/v1/inference", json={"prompt": prompt, **fields})
    assert reply.status_code == 201, reply.text
    async with JobClient(url) as client:
        return [event async for event in client.stream(reply.json()["job_id"])]


def text_of(events: list[JobEvent]) -> str:
    tokens = [e.data for e in events if e.kind == "token"]
    assert [t["i"] for t in tokens] == list(range(len(tokens)))
    return "".join(t["t"] for t in tokens)


async def wait_busy(http: httpx.AsyncClient) -> None:
    with anyio.fail_after(10):
        while not (await http.get("/health")).json()["busy"]:  # noqa: ASYNC110 - polled API
            await anyio.sleep(0.005)
