"""Error bodies in another API's shape on some paths (ASGI middleware, outermost).

Every job-server error is `{"error": <sentence>, "detail": …}`, whoever answers it: the
Host/Origin guard (403, 415), bearer auth (401), the body limits (408, 413), the error
mapper (404, 405, 500, 503, 507). A door that speaks another protocol on its own paths
(the queen's OpenAI door under /v1/chat/completions, /v1/models, …) needs those same
answers in its protocol's shape, or its clients cannot read them. `ErrorShapes` rewrites
such bodies on the paths given, after the fact, so no middleware has to know about doors.
A body already in another shape (an `error` that is not a string) passes untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# (status, message, detail) -> the body to answer instead
ErrorShape = Callable[[int, str, Any], dict[str, Any]]


class ErrorShapes:
    """Rewrites `{"error": str, "detail"}` bodies (status 400 and up) on the paths under a
    prefix of `shapes` with that prefix's `ErrorShape`; the longest prefix wins."""

    def __init__(self, app: ASGIApp, *, shapes: Mapping[str, ErrorShape]) -> None:
        self.app = app
        self._shapes = sorted(shapes.items(), key=lambda item: -len(item[0]))

    def shape_for(self, path: str) -> ErrorShape | None:
        """The shape the errors on `path` take, or None for the job server's own."""
        return next((shape for prefix, shape in self._shapes if path.startswith(prefix)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        shape = self.shape_for(scope["path"]) if scope["type"] == "http" else None
        if shape is None:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        held = bytearray()

        async def reshape(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] >= 400 and _is_json(message):
                    start = message  # held until the whole body is in
                    return
                await send(message)
            elif start is not None and message["type"] == "http.response.body":
                held.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    await _send_reshaped(send, start, bytes(held), shape)
            else:
                await send(message)

        await self.app(scope, receive, reshape)


def _is_json(start: Message) -> bool:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


async def _send_reshaped(send: Send, start: Message, raw: bytes, shape: ErrorShape) -> None:
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        raw = json.dumps(
            shape(start["status"], body["error"], body.get("detail")), ensure_ascii=False
        ).encode()
    headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(raw)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": raw, "more_body": False})
