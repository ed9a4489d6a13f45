"""A split's answer, asked through the queen and compared with an unsplit worker's: the
steps the split tests share (tests/e2e/test_split_three.py, test_split_far_worker.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from jobs import JobEvent
from jobs.client import JobClient
from tests.support._jobs import run_job
from tests.support._splithosts import Queen, queen_call, rbee_lines
from tests.support._worker import infer, spawn_worker

PROMPT = "hello world"
MAX_TOKENS = 12
GREEDY = {"max_tokens": MAX_TOKENS, "temperature": 0, "logprobs": 0}  # each token's bytes


def answer_tokens(events: list[JobEvent]) -> list[bytes]:
    """The answer's tokens, in order, each as its bytes (from its logprobs entry: a piece
    of text on the stream may hold several tokens, or wait for the rest of a character)."""
    assert events[-1].data["state"] == "completed", events[-1].data
    pieces = [e.data for e in events if e.kind == "token"]
    assert [p["i"] for p in pieces] == list(range(len(pieces))), pieces
    tokens = [bytes(entry["bytes"]) for p in pieces for entry in p["lp"]]
    assert len(tokens) == events[-1].data["result"]["tokens_out"], events[-1].data
    return tokens


async def unsplit_answer(home: Path, model: Path) -> list[bytes]:
    """The tokens a plain worker of `model` (no RPC, no lend limit) answers PROMPT with."""
    async with spawn_worker(home, model) as worker:
        await worker.wait_action("ready")
        return answer_tokens(await infer(worker.url, PROMPT, **GREEDY))


async def placement(queen: Queen, model: Path) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
        reply = await http.get(
            f"/v1/placements?model={quote(str(model), safe='')}",
            headers={"authorization": f"Bearer {queen.token}"},
        )
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


async def download_on(queen: Queen, model: Path, hive_ids: list[str]) -> None:
    for hive_id in hive_ids:
        op = {"operation": "model_download", "model": str(model), "hive_id": hive_id}
        await queen_call(queen, op)


async def split_answer(queen: Queen, model: Path) -> tuple[str, list[bytes]]:
    """PROMPT through the queen, greedy: what the job narrated (one string) and the
    answer's tokens."""
    async with JobClient(queen.url, token=queen.token) as jobs:
        op = {"operation": "infer", "model": str(model), "prompt": PROMPT, **GREEDY}
        events = await run_job(jobs, op)
    return " ".join(str(e.data.get("human", "")) for e in events), answer_tokens(events)


def rpc_listeners(
    authorized_keys: Path, found: list[tuple[int | None, str, int, str]]
) -> list[tuple[int | None, str, int, str]]:
    """Among `found` listeners, those on the RPC port the one link grant in
    `authorized_keys` opens."""
    (granted,) = rbee_lines(authorized_keys)
    rpc_port = int(granted.split('permitopen="127.0.0.1:')[1].split('"')[0])
    return [entry for entry in found if entry[2] == rpc_port]
