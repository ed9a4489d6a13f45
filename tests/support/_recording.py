"""A stand-in that answers like a hive (or a worker) to anyone, and records every request.

It plays the impostor in security tests (what would reach a process that is not rbee's)
and the far end in credential tests (which headers each hop sends).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

COMPLETED_STREAM = b'id: 1\nevent: state\ndata: {"state":"completed","ts":1}\n\ndata: [DONE]\n\n'
HEAD_MAX_BYTES = 65536  # a request head larger than this is not one a client of ours sends


@dataclass
class RecordingHive:
    url: str
    heads: list[bytes] = field(default_factory=list)  # every request head, in order

    def headers_of(self, path: bytes) -> list[dict[bytes, bytes]]:
        """The lower-cased headers of each request to `path`."""
        found = []
        for head in self.heads:
            request_line, *lines = head.split(b"\r\n")
            if request_line.split(b" ")[1] == path:
                pairs = (line.split(b":", 1) for line in lines if b":" in line)
                found.append({k.strip().lower(): v.strip() for k, v in pairs})
        return found


@asynccontextmanager
async def recording_hive(*, require_token: str | None = None) -> AsyncIterator[RecordingHive]:
    """A loopback HTTP/1.1 server that records request heads and answers like a hive:
    /health, POST /v1/jobs (job-1 created) and job-1's stream (it completed). With
    `require_token`, job calls without that bearer token get a hive's 401."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    hive = RecordingHive(f"http://127.0.0.1:{port}")

    async def handle(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            try:
                head = await reader.receive_until(b"\r\n\r\n", HEAD_MAX_BYTES)
                hive.heads.append(head)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.receive_exactly(length)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound):
                return
            kind = b"application/json"
            bearer = b"authorization: bearer " + (require_token or "").encode()
            if (
                require_token
                and not head.startswith(b"GET /health ")
                and bearer not in head.lower()
            ):
                status, body = b"401 Unauthorized", {"error": "requires a token", "detail": None}
            elif head.startswith(b"POST /v1/jobs "):
                status, body = (
                    b"201 Created",
                    {"job_id": "job-1", "sse_url": "/v1/jobs/job-1/stream"},
                )
            elif head.startswith(b"GET /v1/jobs/job-1/stream "):  # the queen relays the job
                status, body, kind = b"200 OK", None, b"text/event-stream"
            else:
                status, body = b"200 OK", {"status": "ok", "version": "9.9.9"}
            payload = json.dumps(body).encode() if body is not None else COMPLETED_STREAM
            await stream.send(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: " + kind + b"\r\n"
                b"content-length: " + str(len(payload)).encode() + b"\r\n"
                b"connection: close\r\n\r\n" + payload
            )

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield hive
        tg.cancel_scope.cancel()
