"""The queen's GET /metrics: Prometheus text that prometheus_client parses, behind the
queen's token, whose counters follow the requests the door served."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    await_until,
    door_client,
    queen_settings,
    queen_with_hive,
    start_queen,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(queen_url: str, token: str | None = None) -> Samples:
    """Every sample of the queen's /metrics: (name, labels) -> value."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=queen_url, trust_env=False) as http:
        answer = await http.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


@pytest.mark.anyio
async def test_metrics_need_the_token_and_each_queen_counts_apart(rbee_home: Path) -> None:
    """With a token, /metrics is a 401 without it; two queens in one process each serve
    their own metrics (no shared registry), and a failed request moves only its queen's
    request and failure counters."""
    token = "s3cret"
    async with (
        start_queen(queen_settings(rbee_home / "a", token=token)) as first,
        start_queen(queen_settings(rbee_home / "b")) as second,
    ):
        async with httpx.AsyncClient(base_url=first.url, trust_env=False) as http:
            assert (await http.get("/metrics")).status_code == 401
        async with door_client(second) as client:  # its hive is down: a 502, retried twice
            with pytest.raises(openai.InternalServerError):
                await client.completions.create(model="builtin:tiny", prompt="hi")
        one, two = await scrape(first.url, token), await scrape(second.url)
    assert value(two, "rbee_requests_total", route="/v1/completions", status="502") == 3
    assert value(two, "rbee_failures_total") == 3
    assert value(one, "rbee_requests_total") == 0
    assert value(one, "rbee_failures_total") == 0
    assert ("rbee_queue_depth", frozenset()) in one


@pytest.mark.anyio
@pytest.mark.process
async def test_counters_follow_served_requests_and_slots_follow_the_beats(
    rbee_home: Path,
) -> None:
    """After a streamed and a non-streamed chat completion: two 200s counted, generated
    tokens equal to the usage both answers reported, one time-to-first-token, latency and
    queue wait each, nobody queued; the worker's slots appear under its hive, and idle
    once the answers ended."""
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello bee"}]
    async with queen_with_hive(rbee_home) as (queen, _), door_client(queen) as client:
        whole = await client.chat.completions.create(
            model="builtin:tiny", messages=messages, max_tokens=12
        )
        stream = await client.chat.completions.create(
            model="builtin:tiny",
            messages=messages,
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

        async def slots_idle() -> bool:  # in a beat sent after both answers ended
            now = await scrape(queen.url)
            busy = value(now, "rbee_slots", hive="localhost", state="busy")
            return busy == 0 and value(now, "rbee_slots", hive="localhost", state="idle") > 0

        await await_until(slots_idle, deadline_s=30)
        samples = await scrape(queen.url)
    assert whole.usage is not None and chunks[-1].usage is not None
    tokens = whole.usage.completion_tokens + chunks[-1].usage.completion_tokens
    chat = "/v1/chat/completions"
    assert value(samples, "rbee_requests_total", route=chat, status="200") == 2
    assert value(samples, "rbee_generated_tokens_total", model="builtin:tiny") == tokens
    assert value(samples, "rbee_time_to_first_token_seconds_count", model="builtin:tiny") == 2
    assert value(samples, "rbee_request_duration_seconds_count", model="builtin:tiny") == 2
    assert value(samples, "rbee_queue_wait_seconds_count") == 2
    assert value(samples, "rbee_queue_depth") == 0
    assert value(samples, "rbee_hive_up", hive="localhost") == 1
    slots = {dict(labels)["state"] for name, labels in samples if name == "rbee_slots"}
    assert slots == {"busy", "idle"}
