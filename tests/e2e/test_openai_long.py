"""Generations that outlast the body-read deadline complete through the OpenAI door: the
deadline covers reading the body, not the wait for a worker, the generation or the
streamed answer (issue 20: every request was cut at 30 s, 408 or a dropped stream).

The queen's deadline is set to 0.2 s here, and each answer takes seconds on the
slow model, so the old behaviour fails every request without a 30 s test."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import await_until, door_client, job_result, queen_with_hive
from tests.support.e2e import DEADLINE_S, PROMPT

pytestmark = pytest.mark.process  # queen_with_hive starts a real hive (and its workers)

READ_DEADLINE_S = 0.2  # the queen's body-read deadline here: loopback bodies take microseconds
LONG_TOKENS = 2000  # tens of seconds on the slow model: far past the limit below
TOKENS = 120  # over a second of generation on the slow model (tens of tokens/s on 2 cores)


@pytest.mark.anyio
async def test_answers_longer_than_the_body_read_deadline_complete_streamed_and_not(
    rbee_home: Path, slow_model: Path
) -> None:
    """With a 0.2 s body-read deadline, a non-streamed completion and a streamed one that
    each take longer than that end whole: finish_reason `length` after all max_tokens,
    with usage counting them as the worker's job did, and the stream ends with its usage
    chunk."""
    async with (
        queen_with_hive(rbee_home, body_read_timeout_s=READ_DEADLINE_S) as (queen, _),
        door_client(queen) as client,
    ):
        common = {"model": str(slow_model), "prompt": PROMPT, "max_tokens": TOKENS, "seed": 1}
        await client.completions.create(**{**common, "max_tokens": 1})  # spawns the worker

        began = time.monotonic()
        whole = await client.completions.create(**common)
        took = time.monotonic() - began
        assert took > READ_DEADLINE_S
        assert whole.choices[0].finish_reason == "length"
        assert whole.usage is not None
        assert whole.usage.completion_tokens == TOKENS
        counted = await job_result(queen.url, whole.id)  # what the worker's job reported
        assert counted["tokens_out"] == TOKENS
        assert whole.usage.prompt_tokens == counted["prompt_tokens"] > 0
        assert whole.usage.total_tokens == counted["prompt_tokens"] + TOKENS

        began = time.monotonic()
        stream = await client.completions.create(
            **common, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        took = time.monotonic() - began
        assert took > READ_DEADLINE_S
        *texts, last = chunks
        assert [c.choices[0].finish_reason for c in texts if c.choices][-1] == "length"
        assert last.choices == []
        assert last.usage is not None
        assert last.usage.completion_tokens == TOKENS
        assert last.usage.prompt_tokens == whole.usage.prompt_tokens  # the same prompt
        assert "".join(c.choices[0].text for c in texts if c.choices)


@pytest.mark.anyio
async def test_a_generation_past_the_limit_is_stopped_and_answered_504_once(
    rbee_home: Path, slow_model: Path
) -> None:
    """With an 8 s generation limit, a long non-streamed completion is answered 504
    `generation_timeout` and the client does not send it again (one request reaches the
    door); a long stream ends with an error frame; both jobs end cancelled."""
    limit_s = 8.0  # seconds: one token fits on a loaded machine, 2000 tokens do not
    async with (
        queen_with_hive(rbee_home, generation_timeout_s=limit_s) as (queen, _),
        door_client(queen) as client,
    ):
        common = {"model": str(slow_model), "prompt": PROMPT, "seed": 1}
        await client.completions.create(**common, max_tokens=1)  # spawns the worker
        with pytest.raises(openai.APIStatusError) as whole:
            await client.completions.create(**common, max_tokens=LONG_TOKENS)
        stream = await client.completions.create(**common, max_tokens=LONG_TOKENS, stream=True)
        with pytest.raises(openai.APIError, match="did not finish within the queen's limit"):
            async for _ in stream:
                pass
        async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:

            async def both_cancelled() -> bool:  # the two long ones, newest first
                jobs = (await http.get("/v1/jobs")).json()["jobs"]
                return [job["state"] for job in jobs[:2]] == ["cancelled", "cancelled"]

            await await_until(both_cancelled, deadline_s=DEADLINE_S)
            metrics = (await http.get("/metrics")).text
    assert whole.value.status_code == 504
    assert whole.value.code == "generation_timeout"
    assert 'rbee_requests_total{route="/v1/completions",status="504"} 1.0' in metrics
