"""OpenAI's sampling fields on the real worker process (builtin:tiny, 4 slots): each one
changes what comes out the way OpenAI says, and a value the worker cannot honour is a 400
naming its field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from hive.tiny_model import TinyShape, write_tiny_model
from jobs import JobEvent
from jobs.client import JobClient
from tests.support import (
    WORKER_AUTH,
    WORKER_CREDENTIAL,
    RunningProgram,
    in_process_llama,
    infer,
    spawn_worker,
    text_of,
    wait_busy,
)

pytestmark = pytest.mark.anyio

SLOTS = 4
GREEDY = {"max_tokens": 24, "temperature": 0}
WIDE = TinyShape(n_ctx=2048, n_embd=512, n_layer=8, n_ff=2048)  # a slow builtin:tiny
EOS = "2"  # the tiny model's end-of-sequence token id


@pytest.fixture
async def worker(rbee_home: Path, tmp_path: Path) -> AsyncIterator[RunningProgram]:
    model = tmp_path / "tiny.gguf"
    write_tiny_model(model)
    async with spawn_worker(rbee_home, model, "--parallel", str(SLOTS)) as running:
        await running.wait_action("ready")
        yield running


def greedy_first_token(model: Path, prompt: str) -> tuple[int, list[int]]:
    """The token greedy decoding picks first after `prompt` (llama-cpp-python in this
    process), and the prompt's tokens."""
    pytest.importorskip("llama_cpp")
    with in_process_llama(model, logits_all=True) as llm:
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        llm.eval(tokens)
        return int(np.argmax(llm.scores[llm.n_tokens - 1])), tokens


def entries(events: list[JobEvent], choice: int | None = None) -> list[dict[str, Any]]:
    """The logprobs entries of a choice's pieces, in order."""
    return [
        entry
        for e in events
        if e.kind == "token" and (choice is None or e.data.get("c") == choice)
        for entry in e.data.get("lp", [])
    ]


def choice_text(events: list[JobEvent], choice: int) -> str:
    pieces = [e.data for e in events if e.kind == "token" and e.data["c"] == choice]
    assert [p["i"] for p in pieces] == list(range(len(pieces)))
    return "".join(p["t"] for p in pieces)


async def test_logit_bias_bans_the_token_greedy_decoding_picks(
    worker: RunningProgram, tmp_path: Path
) -> None:
    """logit_bias -100 on the token greedy decoding picks first makes the worker pick
    another; at the defaults the greedy pick is that token (the chain unchanged)."""
    first, _ = greedy_first_token(tmp_path / "tiny.gguf", "the queen")
    plain = await infer(worker.url, "the queen", **GREEDY, logprobs=0)
    banned = await infer(worker.url, "the queen", **GREEDY, logprobs=0, logit_bias={first: -100})
    pieces = [bytes(e["bytes"]) for e in entries(plain)]
    assert entries(plain)[0]["top_logprobs"] == []  # logprobs 0: the chosen token alone
    assert bytes(entries(banned)[0]["bytes"]) != pieces[0]
    with_bias = [bytes(e["bytes"]) for e in entries(banned)]
    assert pieces[0] not in with_bias and text_of(banned) != text_of(plain)


async def test_frequency_and_presence_penalties_change_a_repetitive_output(
    worker: RunningProgram,
) -> None:
    """Greedy decoding on builtin:tiny repeats tokens; a frequency penalty and a presence
    penalty each make the output repeat less."""
    fields = {**GREEDY, "max_tokens": 48, "logprobs": 0}
    plain = entries(await infer(worker.url, "the queen", **fields))
    tokens = [bytes(e["bytes"]) for e in plain]
    assert len(set(tokens)) < len(tokens)  # the case the penalties are for
    for penalty in ("frequency_penalty", "presence_penalty"):
        penalized = entries(await infer(worker.url, "the queen", **fields, **{penalty: 2.0}))
        again = [bytes(e["bytes"]) for e in penalized]
        assert again != tokens and len(set(again)) > len(set(tokens)), penalty


async def test_logprobs_list_every_token_with_sorted_alternatives(worker: RunningProgram) -> None:
    """With logprobs 3, every generated token has one entry, in order, whose bytes make
    the text; its logprob and its 3 alternatives' are <= 0, sorted; greedy decoding picks
    the first alternative."""
    events = await infer(worker.url, "the hive", **GREEDY, logprobs=3)
    listed = entries(events)
    result = events[-1].data["result"]
    assert len(listed) == result["tokens_out"] == GREEDY["max_tokens"]
    text = b"".join(bytes(e["bytes"]) for e in listed).decode("utf-8", errors="ignore")
    assert text == text_of(events)
    for entry in listed:
        top = entry["top_logprobs"]
        assert len(top) == 3 and entry["logprob"] <= 0
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert all(t["logprob"] <= 0 for t in top)
        assert (top[0]["bytes"], top[0]["logprob"]) == (entry["bytes"], entry["logprob"])


async def test_n_choices_each_with_its_seed_stop_and_limit(worker: RunningProgram) -> None:
    """n=3 with a seed: three choices on one stream (`c`), each numbered from 0, each the
    generation a single request with seed + its index gives, each ending by length; the
    result lists them; with a stop string a choice may end by stop instead."""
    sampling = {"max_tokens": 12, "temperature": 0.9, "seed": 40}
    events = await infer(worker.url, "the queen", **sampling, n=3)
    result = events[-1].data["result"]
    assert [c["index"] for c in result["choices"]] == [0, 1, 2]
    assert {c["stop_reason"] for c in result["choices"]} == {"length"}
    assert result["tokens_out"] == 3 * 12
    texts = [choice_text(events, c) for c in range(3)]
    for c in range(3):
        alone = await infer(worker.url, "the queen", **{**sampling, "seed": 40 + c})
        assert texts[c] == text_of(alone)
    assert len(set(texts)) > 1
    stop = texts[1][len(texts[1]) // 2 :][:1]
    stopped = await infer(worker.url, "the queen", **sampling, n=3, stop=[stop])
    reasons = [c["stop_reason"] for c in stopped[-1].data["result"]["choices"]]
    assert reasons[1] == "stop" and set(reasons) <= {"stop", "length"}
    assert stop not in choice_text(stopped, 1)


async def test_cancelling_n_choices_frees_every_slot(rbee_home: Path, tmp_path: Path) -> None:
    """Cancelling a request of 3 choices ends it `cancelled` with each choice so, and
    all its slots are free for the next request, which may take every slot."""
    model = tmp_path / "wide.gguf"
    write_tiny_model(model, shape=WIDE)  # seconds per answer: cancelled while running
    # The end token banned: every choice runs until it is cancelled.
    long = {"prompt": "a", "max_tokens": 1800, "seed": 1, "n": 3, "logit_bias": {EOS: -100}}
    async with spawn_worker(rbee_home, model, "--parallel", str(SLOTS)) as worker:
        await worker.wait_action("ready")
        async with httpx.AsyncClient(
            base_url=worker.url, trust_env=False, headers=WORKER_AUTH
        ) as http:
            job_id = (await http.post("/v1/inference", json=long)).json()["job_id"]
            await wait_busy(http, 3)
            await http.delete(f"/v1/jobs/{job_id}")
            async with JobClient(worker.url, token=WORKER_CREDENTIAL) as client:
                events = [e async for e in client.stream(job_id)]
            health = (await http.get("/health")).json()
        assert events[-1].state == "cancelled"
        assert (health["busy"], health["slots_busy"]) == (False, 0)
        after = await infer(worker.url, "the hive", max_tokens=4, seed=2, n=SLOTS)
        assert len(after[-1].data["result"]["choices"]) == SLOTS


async def test_a_tokens_prompt_and_echo(worker: RunningProgram, tmp_path: Path) -> None:
    """A prompt sent as token ids generates what the same text does; echo sends the
    prompt's text first (piece 0) and the completion after it."""
    _, tokens = greedy_first_token(tmp_path / "tiny.gguf", "the queen")
    by_text = await infer(worker.url, "the queen", **GREEDY)
    by_tokens = await infer(worker.url, "", tokens=tokens, **GREEDY)
    echoed = await infer(worker.url, "the queen", **GREEDY, echo=True)
    assert text_of(by_tokens) == text_of(by_text) != ""
    first = next(e for e in echoed if e.kind == "token")
    assert first.data["t"] == "the queen"
    assert text_of(echoed) == "the queen" + text_of(by_text)
    assert by_tokens[-1].data["result"]["prompt_tokens"] == len(tokens)
    complete = [
        e.data
        for e in by_text
        if e.kind == "narration" and e.data["action"] == "inference_complete"
    ]
    assert f"from a {len(tokens)}-token prompt" in complete[0]["human"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"n": SLOTS + 1}, "n", f"{SLOTS} slots"),
        ({"logit_bias": {"999999": 5}}, "logit_bias", "999999"),
        ({"prompt": "", "tokens": [1, 999999]}, "tokens", "999999"),
        ({"echo": True, "logprobs": 2}, "echo", "logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "messages"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"not": {}}}}},
            "response_format.json_schema.schema.not",
            "not",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format.type", "yaml"),
    ],
)
async def test_values_the_worker_cannot_honour_are_400s_naming_the_field(
    worker: RunningProgram, body: dict[str, Any], field: str, words: str
) -> None:
    """Each refused before a job is made, in one sentence naming the field."""
    async with httpx.AsyncClient(base_url=worker.url, trust_env=False, headers=WORKER_AUTH) as http:
        reply = await http.post("/v1/inference", json={"prompt": "the queen", **body})
    assert reply.status_code == 400, reply.text
    assert reply.json()["detail"] == {"field": field}
    assert words in reply.json()["error"]
