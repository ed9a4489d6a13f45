"""Request body limits for job servers (ASGI middleware): a size cap and a read deadline.

A body larger than the cap is answered 413 before it is read whole: at once when
Content-Length declares it, else as soon as the streamed (chunked) bytes pass the cap. A
body that has not fully arrived within the deadline is answered 408, so a client that
declares a large body and trickles it cannot hold a server task for ever. Both answers
close the connection, since the rest of the body is never read.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs import InvalidRequest
from jobs.server._routes import SafeJSONResponse, error_body

MAX_BODY_BYTES = 1 << 20  # 1 MiB: an operation is a few hundred bytes; a long prompt fits
BODY_READ_TIMEOUT_S = 30.0  # seconds for the whole body to arrive once the headers have
# (only the body: the handling and the answer after it are not timed)
MAX_BODY_ENV = "RBEE_MAX_BODY_BYTES"  # overrides MAX_BODY_BYTES for a server


class BodyLimit:
    """Reads each request body up to `max_bytes` within `read_timeout_s`, then hands the
    app the buffered body. Requests without a body pass straight through."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int = MAX_BODY_BYTES,
        read_timeout_s: float = BODY_READ_TIMEOUT_S,
    ) -> None:
        if max_bytes < 1 or read_timeout_s <= 0:
            raise ValueError("BodyLimit needs a positive size and deadline")
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"").strip()
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not chunked and declared in (b"", b"0"):
            await self.app(scope, receive, send)  # no body (the server checked the header)
            return
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send, self._too_large())
            return
        body = bytearray()
        complete = False
        # Only the reads of the body run under the deadline: once it is in, the app's
        # handling and its answer (a generation streamed for minutes) are not timed here.
        with anyio.move_on_after(self.read_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client left: nobody to answer
                body += message.get("body", b"")
                if len(body) > self.max_bytes or not message.get("more_body", False):
                    complete = True
                    break
        if len(body) > self.max_bytes:
            await self._reject(scope, receive, send, self._too_large())
        elif complete:
            await self.app(scope, _replay(bytes(body), receive), send)
        else:
            timeout = InvalidRequest(
                f"the request body did not arrive within {self.read_timeout_s:g} s; "
                "send it at once, or check the network",
                detail={"read_timeout_s": self.read_timeout_s, "received_bytes": len(body)},
                status=408,
            )
            await self._reject(scope, receive, send, timeout)

    def _too_large(self) -> InvalidRequest:
        return InvalidRequest(
            f"the request body is larger than this server's limit of {self.max_bytes} bytes; "
            f"send a smaller body (the limit is set with {MAX_BODY_ENV})",
            detail={"max_bytes": self.max_bytes},
            status=413,
        )

    async def _reject(
        self, scope: Scope, receive: Receive, send: Send, exc: InvalidRequest
    ) -> None:
        response = SafeJSONResponse(
            error_body(str(exc), exc.detail), exc.status, headers={"Connection": "close"}
        )
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the buffered body once, then the connection's own messages
    (so the app still hears `http.disconnect`)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
