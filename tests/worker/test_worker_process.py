"""The real llm-worker-rbee process: narration before its server, /health loading → ready."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from hive.supervisor import free_port
from hive.tiny_model import write_tiny_model
from narration_core import CAPTURE_ENV, parse_line

pytestmark = pytest.mark.anyio

DEADLINE_S = 30.0  # a cold interpreter importing uvicorn + llama_cpp on a busy 2-core box


@dataclass
class WorkerProcess:
    process: anyio.abc.Process
    url: str
    lines: list[str] = field(default_factory=list)

    def actions(self) -> list[str]:
        return [e.action for line in self.lines if (e := parse_line(line)) is not None]

    async def wait_action(self, action: str) -> None:
        with anyio.fail_after(DEADLINE_S):
            while action not in self.actions():  # noqa: ASYNC110 - lines arrive in another task
                await anyio.sleep(0.01)


@asynccontextmanager
async def spawn_worker(home: Path, model: Path) -> AsyncIterator[WorkerProcess]:
    """Run the real worker on `model` and a free port; SIGTERM on exit if still running."""
    port = free_port()
    env = {**os.environ, "RBEE_HOME": str(home), CAPTURE_ENV: "1"}
    argv = [sys.executable, "-m", "worker", "--model", str(model), "--port", str(port)]
    process = await anyio.open_process([*argv, "--worker-id", "w-test"], env=env,
                                       stderr=subprocess.STDOUT)  # fmt: skip
    handle = WorkerProcess(process, f"http://127.0.0.1:{port}")
    assert process.stdout is not None
    stdout = BufferedByteReceiveStream(process.stdout)

    async def read_lines() -> None:
        while True:
            try:
                handle.lines.append((await stdout.receive_until(b"\n", 1 << 20)).decode())
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return

    async with process, anyio.create_task_group() as tg:
        tg.start_soon(read_lines)
        try:
            yield handle
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with anyio.fail_after(DEADLINE_S):
                    await process.wait()


async def health(url: str) -> dict[str, str]:
    async with httpx.AsyncClient(trust_env=False) as http:
        return (await http.get(f"{url}/health")).json()  # type: ignore[no-any-return]


async def test_health_says_loading_until_the_model_is_in(rbee_home: Path, tmp_path: Path) -> None:
    """While llama.cpp waits for the model's bytes (a FIFO nobody writes yet) the worker
    has narrated `startup` and `model_load` and its /health answers `loading`; bytes that
    are not a model end it with exit 1 and the reason as its last line."""
    fifo = tmp_path / "slow.gguf"
    os.mkfifo(fifo)
    async with spawn_worker(rbee_home, fifo) as worker:
        await worker.wait_action("listen")
        assert worker.actions()[:2] == ["startup", "model_load"]
        assert (await health(worker.url))["status"] == "loading"
        assert (await health(worker.url))["status"] == "loading"  # still held by the FIFO
        # Opening the FIFO releases llama.cpp, which gives up on it at once (it cannot seek
        # a pipe), so the write may find the reader gone.
        with contextlib.suppress(BrokenPipeError):
            async with await anyio.open_file(fifo, "wb") as feed:
                await feed.write(b"not a model at all")
        with anyio.fail_after(DEADLINE_S):
            assert await worker.process.wait() == 1
    last = parse_line(worker.lines[-1])
    assert last is not None and last.action == "failed" and "cannot load model" in last.human


async def test_health_turns_ready_on_the_tiny_model(rbee_home: Path, tmp_path: Path) -> None:
    """On builtin:tiny the worker narrates startup → model_load (loading) → listen →
    model_load (loaded, with size and time) → ready, /health says `ready`, and SIGTERM
    ends it with exit 0."""
    model = tmp_path / "tiny.gguf"
    write_tiny_model(model)
    async with spawn_worker(rbee_home, model) as worker:
        await worker.wait_action("ready")
        body = await health(worker.url)
        assert body["status"] == "ready" and body["worker_id"] == "w-test"
        worker.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(DEADLINE_S):
            assert await worker.process.wait() == 0
    actions = worker.actions()
    assert actions[:2] == ["startup", "model_load"]
    assert actions.count("model_load") == 2 and actions.index("ready") > actions.index("listen")
    loaded = [line for line in worker.lines if "Loaded tiny.gguf" in line]
    assert loaded and " MB) in " in loaded[0]
