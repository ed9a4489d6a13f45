"""The SSE response: a raw ASGI app that streams one job's log, then its terminator.

Frames are `id: <seq>`, `event: <kind>`, `data: <json>`; every event that is ready goes out
in one send (per-event sends cap near 80k events/s, batches reach 500k+). Idle streams
get `: keep-alive` comments. The stream ends only when the job is final: its `state`
event, then exactly one terminator line (`data: [DONE]`, `data: [ERROR] <message>` or
`data: [CANCELLED]`). A task in the response's own task group watches for the client
going away and cancels the pump, so a dead subscriber leaves no task behind; no async
generator yields inside that group (anyio's cancel-scope rule).
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
from starlette.types import Receive, Scope, Send

from jobs.server._logreaders import LogReader

KEEPALIVE_S = 15.0  # idle seconds before a keep-alive comment; proxies drop silent streams
KEEPALIVE = b": keep-alive\n\n"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tell nginx-style proxies not to buffer the stream
]


class EventStreamResponse:
    """Streams `reader` to one client; closes the reader however the stream ends."""

    def __init__(
        self,
        reader: LogReader,
        *,
        keepalive_s: float = KEEPALIVE_S,
        open_streams: set[EventStreamResponse] | None = None,
    ) -> None:
        self.reader = reader
        self.keepalive_s = keepalive_s
        self._open = open_streams if open_streams is not None else set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._open.add(self)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                await self._pump(send)
                tg.cancel_scope.cancel()
        except OSError:  # the client went away mid-send; nothing is left to tell it
            pass
        finally:
            self.reader.close()
            self._open.discard(self)

    async def _pump(self, send: Send) -> None:
        reader = self.reader
        while True:
            batch = await reader.take()
            if batch:
                await _body(send, b"".join([entry.sse_frame() for entry in batch]))
                await anyio.lowlevel.checkpoint()  # let other streams run between batches
                continue
            if reader.at_end():
                await _body(send, f"data: {reader.terminator()}\n\n".encode(), more=False)
                return
            with anyio.move_on_after(self.keepalive_s) as idle:
                await reader.wait()
            if idle.cancelled_caught:
                await _body(send, KEEPALIVE)


async def _body(send: Send, body: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": more})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
