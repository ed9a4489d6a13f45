"""The real llm-worker-rbee process, and prompts sent to it.

A worker serves only callers with its credential (a hive hands each worker its own); the
workers started here all get WORKER_CREDENTIAL, which the helpers below send."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx

from hive.supervisor import free_port
from jobs import WORKER_CREDENTIAL_ENV, JobEvent
from jobs.client import JobClient
from tests.support._programs import RunningProgram, spawn_program, url_of

WORKER_CREDENTIAL = "a-test-workers-credential"
WORKER_AUTH = {"Authorization": f"Bearer {WORKER_CREDENTIAL}"}


@asynccontextmanager
async def spawn_worker(home: Path, model: Path, *flags: str) -> AsyncIterator[RunningProgram]:
    """Run the real worker on `model` and a free port until it listens; SIGTERM on exit.
    `flags` go on its command line (`--parallel 8`)."""
    argv = [sys.executable, "-m", "worker", "--model", str(model), "--port", str(free_port())]
    argv += ["--worker-id", "w-test", *flags]
    env = {WORKER_CREDENTIAL_ENV: WORKER_CREDENTIAL}
    ready = url_of("listen")
    async with spawn_program(argv, home=home, ready=ready, merge_stderr=True, env=env) as w:
        w.token = WORKER_CREDENTIAL
        yield w


async def infer(url: str, prompt: str, **fields: object) -> list[JobEvent]:
    """POST /v1/inference and read the job's stream to its end."""
    async with httpx.AsyncClient(base_url=url, trust_env=False, headers=WORKER_AUTH) as http:
        reply = await http.post("/v1/inference", json={"prompt": prompt, **fields})
    assert reply.status_code == 201, reply.text
    async with JobClient(url, token=WORKER_CREDENTIAL) as client:
        return [event async for event in client.stream(reply.json()["job_id"])]


def text_of(events: list[JobEvent]) -> str:
    tokens = [e.data for e in events if e.kind == "token"]
    assert [t["i"] for t in tokens] == list(range(len(tokens)))
    return "".join(t["t"] for t in tokens)


async def wait_busy(http: httpx.AsyncClient, slots: int = 1) -> None:
    """Poll the worker's /health until at least `slots` of its slots are generating."""
    with anyio.fail_after(10):
        while (await http.get("/health")).json()["slots_busy"] < slots:  # noqa: ASYNC110 - polled
            await anyio.sleep(0.005)


async def worker_health(url: str) -> dict[str, Any]:
    """The worker's /health body."""
    async with httpx.AsyncClient(trust_env=False) as http:
        return (await http.get(f"{url}/health")).json()  # type: ignore[no-any-return]


async def start_inference(url: str, prompt: str, **fields: object) -> str:
    """POST /v1/inference; the new job's id."""
    async with httpx.AsyncClient(base_url=url, trust_env=False, headers=WORKER_AUTH) as http:
        reply = await http.post("/v1/inference", json={"prompt": prompt, **fields})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["job_id"])


async def timed_stream(
    url: str, job_id: str, into: list[tuple[float, JobEvent]] | None = None
) -> list[tuple[float, JobEvent]]:
    """Read a job's stream to its end, each event with the monotonic time it arrived;
    appended to `into` as they come (for a task that watches them), and returned."""
    events = [] if into is None else into
    async with JobClient(url, token=WORKER_CREDENTIAL) as client:
        async for event in client.stream(job_id):
            events.append((time.monotonic(), event))
    return events


@contextmanager
def in_process_llama(model: Path, **options: Any) -> Iterator[Any]:
    """llama-cpp-python's own `Llama` on `model` in this process (the reference a worker's
    tokens are compared with); closed after, with the /dev/null handles it leaks collected."""
    import gc
    import warnings

    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=0, verbose=False, **options)
    try:
        yield llm
    finally:
        llm.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del llm
            gc.collect()
