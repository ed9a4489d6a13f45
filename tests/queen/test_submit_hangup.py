"""A client that hangs up while POST /v1/jobs still waits for the job to be ready.

POST waits up to READY_WAIT_S for an upstream (hive, worker) to take the job, so that it
can answer 502 itself. A keeper interrupted (Ctrl-C) during that wait never learns the
job's id and so cannot cancel it: the server must do it, or the job runs on unseen.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.support import CANCEL_DEADLINE_S, only_job, silent_hive, spawn_queen, state_after


@pytest.mark.anyio
async def test_a_job_whose_client_hung_up_before_the_answer_is_cancelled(
    rbee_home: Path,
) -> None:
    """A POST the client abandons before the answer (it never got the job id) cancels the job."""
    async with silent_hive() as hive_url, spawn_queen(rbee_home, "--hive", f"slow={hive_url}") as q:
        body = b'{"operation": "worker_list", "hive_id": "slow"}'
        host, port = q.url.removeprefix("http://").split(":")
        stream = await anyio.connect_tcp(host, int(port))
        await stream.send(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        with anyio.fail_after(CANCEL_DEADLINE_S):
            job_id, state = await only_job(q.url)
        assert state == "running"
        await stream.aclose()  # Ctrl-C: the keeper exits without the answer

        with anyio.fail_after(CANCEL_DEADLINE_S):
            assert await state_after(q.url, job_id, "running") == "cancelled"
