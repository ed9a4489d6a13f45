"""Embeddings on the real worker with a real model (builtin:smollm2, SmolLM2-135M-Instruct):
`POST /v1/embeddings` pools the model's hidden states into one unit vector per input, the
same whether an input comes alone or in a batch, and near in meaning means near in space.
The embedding context is the worker's second one: generations go on beside it."""

from __future__ import annotations

import math
from typing import Any

import anyio
import httpx
import pytest

from tests.support import WORKER_AUTH, RunningProgram, infer, text_of

pytestmark = pytest.mark.anyio

CAT = "a cat sat on the mat"
KITTEN = "a kitten rested on the rug"
RATES = "interest rates rose in March"
SAME = 0.99999  # batched and alone, a vector is the same to this cosine (rounding aside)


async def embed(url: str, inputs: list[Any], *, auth: bool = True) -> httpx.Response:
    headers = WORKER_AUTH if auth else {}
    async with httpx.AsyncClient(base_url=url, trust_env=False, headers=headers) as http:
        return await http.post("/v1/embeddings", json={"input": inputs}, timeout=120)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)


async def test_near_meanings_are_near_batched_and_alone(chat_worker: RunningProgram) -> None:
    """Three texts in one request: three unit vectors of the model's width (576), the cat
    closer to the kitten than to interest rates; each text sent alone gets the same
    vector, and the token counts add up."""
    reply = await embed(chat_worker.url, [CAT, KITTEN, RATES])
    assert reply.status_code == 200, reply.text
    batched = reply.json()
    cat, kitten, rates = batched["data"]
    assert batched["dimensions"] == len(cat) == 576
    for vector in (cat, kitten, rates):
        assert math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-5)
    assert cosine(cat, kitten) > cosine(cat, rates)

    alone = [(await embed(chat_worker.url, [text])).json() for text in (CAT, KITTEN, RATES)]
    for single, vector in zip(alone, batched["data"], strict=True):
        assert cosine(single["data"][0], vector) > SAME
    assert sum(a["prompt_tokens"] for a in alone) == batched["prompt_tokens"] > 3


async def test_token_ids_embed_and_bad_inputs_are_refused(chat_worker: RunningProgram) -> None:
    """Token-id lists embed as texts do; an empty input, an empty list, a token id
    outside the vocabulary, an input longer than the embedding context, a mixed list and
    a missing credential are refused, each saying what to send."""
    ids = await embed(chat_worker.url, [[1, 2, 3, 4], [5, 6]])
    assert ids.status_code == 200, ids.text
    assert len(ids.json()["data"]) == 2 and ids.json()["prompt_tokens"] == 6

    for bad, says in (
        ([""], "input 0 is empty"),
        ([], "input"),
        ([[1], [10**9]], "input 1 holds token id 1000000000"),
        ([[7] * 100_000], "embeds at most"),
        (["text", [1, 2]], "input"),
    ):
        reply = await embed(chat_worker.url, bad)
        assert reply.status_code == 400, (bad, reply.text)
        assert says in reply.json()["error"]
    assert (await embed(chat_worker.url, [CAT], auth=False)).status_code == 401


async def test_generations_go_on_while_embedding(chat_worker: RunningProgram) -> None:
    """A generation and an embedding request at once both complete: the embedding
    context is the chat_worker's own, beside the engine's."""
    results: dict[str, Any] = {}

    async def generate() -> None:
        results["text"] = text_of(await infer(chat_worker.url, "The bee", max_tokens=16, seed=1))

    async def vectors() -> None:
        results["embed"] = await embed(chat_worker.url, [CAT] * 20)

    async with anyio.create_task_group() as tg:
        tg.start_soon(generate)
        tg.start_soon(vectors)
    assert results["text"]
    assert results["embed"].status_code == 200
    data = results["embed"].json()["data"]
    assert len(data) == 20
    for vector in data:
        assert cosine(vector, data[0]) > SAME


async def test_a_burst_beyond_the_waiting_room_is_told_to_retry(
    chat_worker: RunningProgram,
) -> None:
    """One request embeds at a time and a few wait; a burst beyond them is answered 503
    with Retry-After (the worker stays responsive), and every request let in completes."""
    texts = [f"{CAT} {i} " * 8 for i in range(16)]  # each request embeds for a while
    replies: list[httpx.Response] = []
    async with httpx.AsyncClient(
        base_url=chat_worker.url, trust_env=False, headers=WORKER_AUTH, timeout=120
    ) as http:

        async def one() -> None:
            replies.append(await http.post("/v1/embeddings", json={"input": texts}))

        async with anyio.create_task_group() as tg:  # sent together, on one client
            for _ in range(12):
                tg.start_soon(one)
    statuses = sorted(r.status_code for r in replies)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 2
    busy = next(r for r in replies if r.status_code == 503)
    assert busy.headers["Retry-After"] == "1" and "busy embedding" in busy.json()["error"]
    assert all(len(r.json()["data"]) == 16 for r in replies if r.status_code == 200)
