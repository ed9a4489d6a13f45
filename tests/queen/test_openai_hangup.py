"""An OpenAI client that hangs up while the queen still waits for a worker to take its
prompt (a first request's model fetch, a hive that is slow to answer): the job is
cancelled, as for POST /v1/jobs (tests/queen/test_submit_hangup.py), rather than left
to fetch and generate for nobody."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.support import CANCEL_DEADLINE_S, only_job, silent_hive, spawn_queen, state_after


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [False, True])
async def test_a_completion_whose_client_hung_up_before_a_worker_took_it_is_cancelled(
    rbee_home: Path, stream: bool
) -> None:
    """POST /v1/completions, the only hive never answers, the client leaves: the infer job
    ends cancelled (it ran until the hive's read timeout, then failed)."""
    async with (
        silent_hive() as hive_url,
        spawn_queen(rbee_home, "--hive", f"localhost={hive_url}") as q,
    ):
        body = json.dumps({"model": "builtin:tiny", "prompt": "hi", "stream": stream}).encode()
        host, port = q.url.removeprefix("http://").split(":")
        conn = await anyio.connect_tcp(host, int(port))
        await conn.send(
            b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        with anyio.fail_after(CANCEL_DEADLINE_S):
            job_id, state = await only_job(q.url)
        assert state == "running"
        await conn.aclose()  # the client gives up before any answer

        with anyio.fail_after(CANCEL_DEADLINE_S):
            assert await state_after(q.url, job_id, "running") == "cancelled"
