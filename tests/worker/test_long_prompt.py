"""Cancelling while a long prompt is evaluated, on the real worker process and llama.cpp.

builtin:tiny's context is 256 tokens; here the same model with an 8192-token context
takes a prompt of ~6,000 tokens, which llama.cpp needs seconds to evaluate on these
machines: evaluated whole, a cancelled request kept the worker busy until it was done.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import anyio
import httpx
import pytest

from hive.tiny_model import TinyShape, write_tiny_model
from jobs import JobEvent
from jobs.client import JobClient
from tests.support import (
    WORKER_AUTH,
    WORKER_CREDENTIAL,
    RunningProgram,
    infer,
    spawn_worker,
    text_of,
    wait_busy,
)

pytestmark = pytest.mark.anyio

CONTEXT = 8192  # tokens: room for LONG_PROMPT
LONG_PROMPT = "the queen bee is " * 350  # a token a character here: ~6,000 tokens
FREE_S = 1.0  # from the cancel to the next request generating, as the user notices it


@pytest.fixture
async def worker(rbee_home: Path, tmp_path: Path) -> AsyncIterator[RunningProgram]:
    model = tmp_path / "tiny-8k.gguf"
    write_tiny_model(model, shape=TinyShape(n_ctx=CONTEXT))
    # One slot: the next request can start only once the cancelled one has freed it.
    flags = ("--parallel", "1", "--ctx-size", str(CONTEXT))
    async with spawn_worker(rbee_home, model, *flags) as running:
        await running.wait_action("ready")
        yield running


async def wait_started(url: str, job_id: str) -> None:
    """Read the job's stream until the worker narrates that it is generating for it."""
    async with (
        JobClient(url, token=WORKER_CREDENTIAL) as client,
        aclosing(client.stream(job_id)) as events,
    ):
        async for event in events:
            if event.kind == "narration" and event.data["action"] == "inference_start":
                return
            assert not event.is_final, event.data
    raise AssertionError(f"job {job_id}'s stream ended before it started")


async def read_all(url: str, job_id: str) -> list[JobEvent]:
    async with JobClient(url, token=WORKER_CREDENTIAL) as client:
        return [event async for event in client.stream(job_id)]


async def test_cancel_during_prompt_evaluation_frees_the_worker_within_a_second(
    worker: RunningProgram,
) -> None:
    """A request cancelled while its ~6,000-token prompt is being evaluated (no token out
    yet) lets the worker start the next request within FREE_S of the cancel, not once the
    whole prompt is in; the cancelled job ends `cancelled`, the next one completes."""
    long = {"prompt": LONG_PROMPT, "max_tokens": 4, "seed": 1}
    async with httpx.AsyncClient(base_url=worker.url, trust_env=False, headers=WORKER_AUTH) as http:
        running = await http.post("/v1/inference", json=long)
        assert running.status_code == 201, running.text
        await wait_busy(http)
        with anyio.fail_after(FREE_S):
            await http.delete(f"/v1/jobs/{running.json()['job_id']}")
            follow = {"prompt": "the hive", "max_tokens": 4, "seed": 1}  # seeded: never empty
            after = await http.post("/v1/inference", json=follow)
            assert after.status_code == 201, after.text
            await wait_started(worker.url, after.json()["job_id"])
    events = await read_all(worker.url, running.json()["job_id"])
    assert events[-1].state == "cancelled", events[-1].data
    assert not [e for e in events if e.kind == "token"]  # cancelled within the prompt
    following = await read_all(worker.url, after.json()["job_id"])
    assert following[-1].state == "completed" and text_of(following), following[-1].data


async def test_a_long_prompt_generates_and_a_repeat_reuses_it(worker: RunningProgram) -> None:
    """The long prompt, evaluated chunk by chunk, generates: the same request twice gives
    the same tokens, the second time on the prompt already in the context (only its last
    token evaluated again), so its first token comes much sooner."""
    long = {"max_tokens": 8, "seed": 3, "temperature": 0.8}
    first = await infer(worker.url, LONG_PROMPT, **long)
    second = await infer(worker.url, LONG_PROMPT, **long)
    assert first[-1].state == second[-1].state == "completed", first[-1].data
    assert text_of(first) == text_of(second) != ""
    results = [events[-1].data["result"] for events in (first, second)]
    assert [r["tokens_out"] for r in results] == [8, 8]
    assert results[1]["first_token_ms"] < results[0]["first_token_ms"] / 2
