"""An OpenAI client that hangs up on a non-streaming completion mid-generation: the infer
job is cancelled, and so the worker's generation (docs/api.md: "A client that disconnects
cancels the job"), rather than generating up to max_tokens for nobody."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support import Chain
from tests.support.e2e import DEADLINE_S, LONG, PROMPT

POLL_S = 0.05  # between looks at the queen's job list


@pytest.mark.anyio
async def test_a_completion_abandoned_mid_generation_is_cancelled(
    chain: Chain,
    slow_model: Path,
) -> None:
    """POST /v1/completions (no stream) with a long answer; once tokens flow the client
    leaves: the job ends cancelled within the deadline (it ran on to max_tokens)."""
    body = json.dumps({"model": str(slow_model), "prompt": PROMPT, **LONG}).encode()
    host, port = chain.queen_url.removeprefix("http://").split(":")
    async with httpx.AsyncClient(base_url=chain.queen_url, trust_env=False) as http:
        before = await job_ids(http)
        conn = await anyio.connect_tcp(host, int(port))
        await conn.send(
            b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        with anyio.fail_after(DEADLINE_S * 3):  # a first prompt spawns the worker
            while not (new := await job_ids(http) - before):  # noqa: ASYNC110 - polled over HTTP
                await anyio.sleep(POLL_S)
            [job_id] = new
            async with http.stream("GET", f"/v1/jobs/{job_id}/stream") as stream:
                async for line in stream.aiter_lines():
                    if line == "event: token":
                        break
        await conn.aclose()  # the client gives up mid-generation
        with anyio.fail_after(DEADLINE_S):
            while (state := await job_state(http, job_id)) == "running":  # noqa: ASYNC110
                await anyio.sleep(POLL_S)
    assert state == "cancelled"


async def job_ids(http: httpx.AsyncClient) -> set[str]:
    return {job["job_id"] for job in (await http.get("/v1/jobs")).json()["jobs"]}


async def job_state(http: httpx.AsyncClient, job_id: str) -> str:
    state: str = (await http.get(f"/v1/jobs/{job_id}")).json()["state"]
    return state
