"""A client that hangs up while POST /v1/jobs still waits for the job to be ready.

POST waits up to READY_WAIT_S for an upstream (hive, worker) to take the job, so that it
can answer 502 itself. A keeper interrupted (Ctrl-C) during that wait never learns the
job's id and so cannot cancel it: the server must do it, or the job runs on unseen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from tests.queen.conftest import spawn_queen

CANCEL_DEADLINE_S = 5.0  # well under READY_WAIT_S (10 s) and the upstream's read timeout
POLL_S = 0.05  # between looks at the queen's job list


@asynccontextmanager
async def silent_hive() -> AsyncIterator[str]:
    """A TCP port that accepts connections and never answers: a hive that hangs."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def hold(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            tg.cancel_scope.cancel()


async def job_states(url: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        reply = await client.get("/v1/jobs")
    return {job["job_id"]: job["state"] for job in reply.json()["jobs"]}


async def only_job(url: str) -> tuple[str, str]:
    """The id and state of the queen's one job, once it has one."""
    while not (states := await job_states(url)):  # noqa: ASYNC110 - polled over HTTP
        await anyio.sleep(POLL_S)
    [(job_id, state)] = states.items()
    return job_id, state


async def state_after(url: str, job_id: str, leaving: str) -> str:
    """The job's state once it is no longer `leaving`."""
    while (state := (await job_states(url))[job_id]) == leaving:  # noqa: ASYNC110
        await anyio.sleep(POLL_S)
    return state


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
            b"POST /v1/jobs HTTP/1.1\r\nHost: queen\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        with anyio.fail_after(CANCEL_DEADLINE_S):
            job_id, state = await only_job(q.url)
        assert state == "running"
        await stream.aclose()  # Ctrl-C: the keeper exits without the answer

        with anyio.fail_after(CANCEL_DEADLINE_S):
            assert await state_after(q.url, job_id, "running") == "cancelled"
