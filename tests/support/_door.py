"""A queen that serves OpenAI clients from a real hive: an in-process queen (so a test may
set what only settings set, such as the body-read deadline) with the real rbee-hive
beating to it, which spawns real llama.cpp workers for the prompts.

- `queen_with_hive(home, *, generation_timeout_s=None, **settings)`: yields (queen, hive)
  once the queen knows the hive's address from its beats; `generation_timeout_s` sets the
  OpenAI door's generation limit (QueenSettings.generation_timeout_s).
- `door_client(queen)`: the official async `openai` client for the queen's door, with
  the client's default retries (a test that counts requests needs them on).
- `job_result(queen_url, answer_id)`: the `infer` job's result behind an OpenAI answer id.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.client import JobClient
from tests.support._chain import BEAT_S
from tests.support._programs import RunningProgram, spawn_program, url_of
from tests.support._queen import RunningQueen, queen_settings, start_queen
from tests.support._waiting import await_until

if TYPE_CHECKING:
    import openai

HIVE_KNOWN_DEADLINE_S = 30.0  # the hive's first beat reaching the queen on a busy machine


@asynccontextmanager
async def queen_with_hive(
    home: Path, *, generation_timeout_s: float | None = None, **settings: object
) -> AsyncIterator[tuple[RunningQueen, RunningProgram]]:
    """An in-process queen with `settings` overridden and a real hive `localhost` (same
    RBEE_HOME, so the same cluster secret) beating to it every BEAT_S."""
    if generation_timeout_s is not None:
        settings["generation_timeout_s"] = generation_timeout_s
    chosen = queen_settings(home, **settings)
    async with start_queen(chosen) as queen:
        argv = [sys.executable, "-m", "hive", "--port", "0", "--queen-url", queen.url]
        argv += ["--hive-id", "localhost", "--beat-interval", f"{BEAT_S:g}"]
        async with spawn_program(argv, home=home, ready=url_of("ready")) as hive:

            async def known() -> bool:
                hives = (await queen_status(queen.url))["hives"]
                return any(h["hive_id"] == "localhost" and h["url"] == hive.url for h in hives)

            await await_until(known, deadline_s=HIVE_KNOWN_DEADLINE_S)
            yield queen, hive


async def queen_status(queen_url: str) -> dict[str, Any]:
    """The queen's `queen_status` result (its hives and their workers)."""
    result: dict[str, Any] = {}
    async with JobClient(queen_url) as client:
        job_id = await client.submit({"operation": "queen_status"})
        async for event in client.stream(job_id):
            if event.is_final:
                result = event.data.get("result") or {}
    return result


def door_client(queen: RunningQueen, *, api_key: str = "unused") -> openai.AsyncOpenAI:
    import openai

    return openai.AsyncOpenAI(base_url=f"{queen.url}/v1", api_key=api_key)


async def job_result(queen_url: str, answer_id: str) -> dict[str, Any]:
    """The result of the `infer` job behind an OpenAI answer (`chatcmpl-<job id>`)."""
    job_id = answer_id.split("-", 1)[1]
    result: dict[str, Any] = {}
    async with JobClient(queen_url) as client:
        async for event in client.stream(job_id):
            if event.is_final:
                result = event.data.get("result") or {}
    return result
