"""A hive that hangs, and a queen's jobs read while a client hangs up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import httpx

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
