"""Serving a blob as a file server does: `Range: bytes=N-` answered 206 with the rest, and,
for resume tests, a transfer that drops its connection halfway on purpose."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse


def ranged_response(
    blob: bytes, range_header: str | None, *, cut: bool, send_bytes: int
) -> StreamingResponse:
    """`blob` from the start the Range header asks (whole without one), in `send_bytes`
    writes; with `cut`, the connection is dropped after half of it (uvicorn drops it)."""
    start = int(range_header.removeprefix("bytes=").rstrip("-")) if range_header else 0
    body = blob[start:]

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), send_bytes):
            if cut and i >= len(body) // 2:
                raise ConnectionAbortedError("cut on purpose")
            yield body[i : i + send_bytes]

    headers = {"content-length": str(len(body)), "accept-ranges": "bytes"}
    if range_header:
        headers["content-range"] = f"bytes {start}-{len(blob) - 1}/{len(blob)}"
    return StreamingResponse(chunks(), status_code=206 if range_header else 200, headers=headers)
