"""The queen's admission queue as a keeper user sees it, with real processes and real
llama.cpp: a prompt that finds every slot busy waits, and says where it is in line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobs import JobEvent
from jobs.client import JobClient
from tests.support import Chain, await_until, cancel_running, submit_followed
from tests.support.e2e import LONG, PROMPT

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


def long_infer(model: Path) -> dict[str, Any]:
    return {"operation": "infer", "model": str(model), "prompt": PROMPT, **LONG}


async def test_a_prompt_behind_busy_slots_waits_its_turn_and_says_so(
    chain: Chain, slow_model: Path
) -> None:
    """Every slot of the slow model's worker generating: `keeper infer` for it shows
    'Waiting for a free slot on <model>: 0 ahead' and no token while they run; once they
    are cancelled it is answered by that worker."""
    async with JobClient(chain.queen_url) as client, anyio.create_task_group() as tg:
        busy: list[tuple[str, list[JobEvent]]] = []

        def generating(events: list[JobEvent]) -> bool:
            return any(e.kind == "token" for e in events)

        busy.append(await submit_followed(client, tg, long_infer(slow_model)))
        await await_until(lambda: generating(busy[0][1]), deadline_s=120)  # loaded
        slots = (await chain.status())["workers"][0]["slots"]
        for _ in range(slots - 1):
            busy.append(await submit_followed(client, tg, long_infer(slow_model)))
            await await_until(lambda: generating(busy[-1][1]), deadline_s=30)
        answer: dict[str, Any] = {}

        def keeper() -> None:
            answer["run"] = chain.run(
                "--json", "infer", "--no-autostart", "--model", str(slow_model),
                "--max-tokens", "4", PROMPT,
            )  # fmt: skip

        tg.start_soon(anyio.to_thread.run_sync, keeper)
        mine: list[str] = []

        async def submitted() -> bool:
            known = {job_id for job_id, _ in busy}
            jobs = await client.list_jobs(limit=20)
            mine.extend(
                j["job_id"] for j in jobs if j["operation"] == "infer" and j["job_id"] not in known
            )
            return bool(mine)

        await await_until(submitted, deadline_s=60)
        seen: list[JobEvent] = []

        async def follow_keepers() -> None:
            async for event in client.stream(mine[0]):
                seen.append(event)

        tg.start_soon(follow_keepers)
        await await_until(lambda: any(e.data.get("action") == "queued" for e in seen))
        assert not generating(seen)  # it waits while every slot is busy
        await cancel_running(client, [job_id for job_id, _ in busy])
    events = [json.loads(line) for line in answer["run"].stdout.splitlines()]
    said = [e.get("human") for e in events if e.get("action") == "queued"]
    assert said == [f"Waiting for a free slot on {slow_model}: 0 ahead"]
    assert events[-1]["state"] == "completed"
    routed = {e["target"] for e in events if e.get("action") == "infer"}
    assert routed == {next(e.data["target"] for e in busy[0][1] if e.data.get("action") == "infer")}
