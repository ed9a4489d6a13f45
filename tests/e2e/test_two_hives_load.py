"""32 concurrent streaming OpenAI clients against two hives (two real rbee-hives on
loopback ports, one builtin:tiny worker each, kept by `model_serve --replicas 2`): no
errors, every answer whole, both workers used, one spawn per hive (issue 20)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.client import JobClient
from tests.support import door_client, extra_hive, job_result, queen_with_hive, run_job

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
CLIENTS = 32
TOKENS = 16


async def spawns_by_hive(queen_url: str) -> dict[str, float]:
    """rbee_worker_spawns_total per hive, from the queen's /metrics."""
    async with httpx.AsyncClient(base_url=queen_url, trust_env=False) as http:
        text = (await http.get("/metrics")).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rbee_worker_spawns_total":
                hive = sample.labels["hive"]
                found[hive] = found.get(hive, 0) + sample.value
    return found


async def test_32_streaming_clients_on_two_hives_all_finish_on_both_workers(
    rbee_home: Path, tmp_path: Path
) -> None:
    """Two hives, builtin:tiny served with 2 replicas (spread: one per hive), then 32
    streamed chat completions at once: every stream ends with a finish_reason and its
    usage counts TOKENS tokens (or ends at a stop), both workers answered some, and the
    queen started exactly one worker on each hive."""
    async with (
        queen_with_hive(rbee_home, hives={}) as (queen, _),
        extra_hive(queen, tmp_path / "gpu2", "gpu2"),
    ):
        async with JobClient(queen.url) as jobs:
            serve = {"operation": "model_serve", "model": "builtin:tiny", "replicas": 2}
            final = (await run_job(jobs, serve))[-1].data
        assert final["state"] == "completed", final
        answers: list[dict[str, Any]] = []
        errors: list[BaseException] = []

        async def one(client_no: int) -> None:
            try:
                async with door_client(queen).with_options(max_retries=0) as client:
                    stream = await client.chat.completions.create(
                        model="builtin:tiny",
                        messages=[{"role": "user", "content": f"hello bee {client_no}"}],
                        max_tokens=TOKENS,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    chunks = [chunk async for chunk in stream]
            except Exception as exc:  # counted: the test wants none
                errors.append(exc)
                return
            finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
            usage = chunks[-1].usage
            answers.append(
                {
                    "id": chunks[0].id,
                    "finish": [f for f in finishes if f],
                    "tokens": usage.completion_tokens if usage else None,
                }
            )

        with anyio.fail_after(600):
            async with anyio.create_task_group() as tg:
                for client_no in range(CLIENTS):
                    tg.start_soon(one, client_no)
        assert errors == []
        assert len(answers) == CLIENTS
        for answer in answers:
            assert len(answer["finish"]) == 1, answer  # one final chunk per answer
            assert answer["tokens"] == TOKENS or answer["finish"] == ["stop"], answer
        used = {(await job_result(queen.url, a["id"]))["hive_id"] for a in answers}
        assert used == {"localhost", "gpu2"}
        assert await spawns_by_hive(queen.url) == {"localhost": 1.0, "gpu2": 1.0}
