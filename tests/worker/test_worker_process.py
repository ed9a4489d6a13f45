"""The real llm-worker-rbee process: narration before its server, /health loading → ready."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest

from hive.tiny_model import CHAT_TEMPLATE, write_tiny_model
from narration_core import parse_line
from tests.support import spawn_worker

pytestmark = pytest.mark.anyio

DEADLINE_S = 30.0  # a cold interpreter importing uvicorn + llama_cpp on a busy 2-core box


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
    model_load (loaded, with size and time) → ready, /health says `ready` and carries the
    GGUF's chat template (the queen's OpenAI door renders chats with it), and SIGTERM ends
    it with exit 0."""
    model = tmp_path / "tiny.gguf"
    write_tiny_model(model)
    async with spawn_worker(rbee_home, model) as worker:
        await worker.wait_action("ready")
        body = await health(worker.url)
        assert body["status"] == "ready" and body["worker_id"] == "w-test"
        assert body["chat_template"] == CHAT_TEMPLATE
        worker.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(DEADLINE_S):
            assert await worker.process.wait() == 0
    actions = worker.actions()
    assert actions[:2] == ["startup", "model_load"]
    assert actions.count("model_load") == 2 and actions.index("ready") > actions.index("listen")
    loaded = [line for line in worker.lines if "Loaded tiny.gguf" in line]
    assert loaded and " MB) in " in loaded[0]
