"""Job handlers and network faults for stream tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketAttribute, SocketStream

from jobs.server import Handler, Job
from narration_core import Narrator

NARRATE = Narrator("tester")


def emitter(n: int, gate: anyio.Event | None = None) -> Handler:
    """A handler that narrates `n` events (after `gate`, if given) and completes."""

    async def handler(op: object, job: Job) -> dict[str, int]:
        if gate is not None:
            await gate.wait()
        for i in range(n):
            NARRATE.action("tick").human(f"event {i}").emit()
        return {"emitted": n}

    return handler


@asynccontextmanager
async def cutting_proxy(target_port: int, cut_after: int) -> AsyncIterator[dict[str, int]]:
    """A TCP proxy whose first connection is cut after `cut_after` response bytes."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    info = {"port": listener.extra(SocketAttribute.local_port), "connections": 0}

    async def handle(client: SocketStream) -> None:
        info["connections"] += 1
        limit = cut_after if info["connections"] == 1 else None
        async with (
            client,
            await anyio.connect_tcp("127.0.0.1", target_port) as upstream,
            anyio.create_task_group() as tg,
        ):

            async def forward_request() -> None:
                async for chunk in client:
                    await upstream.send(chunk)

            async def forward_response() -> None:
                sent = 0
                async for chunk in upstream:
                    if limit is not None and sent + len(chunk) >= limit:
                        await client.send(chunk[: limit - sent])
                        tg.cancel_scope.cancel()  # drop both sides mid-stream
                        return
                    sent += len(chunk)
                    await client.send(chunk)
                tg.cancel_scope.cancel()

            tg.start_soon(forward_request)
            tg.start_soon(forward_response)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield info
        tg.cancel_scope.cancel()
