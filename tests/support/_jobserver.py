"""Serving a job server built from `jobs` alone, with handlers the tests define."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from jobs.server import Handler, JobService, ServerConfig, bind_socket, create_app, open_job_server
from tests.support._disk import fill_disk
from tests.support._waiting import await_until


@dataclass
class Served:
    url: str
    service: JobService
    port: int


@contextlib.asynccontextmanager
async def serve_jobs(
    state_dir: Path,
    handlers: Mapping[str, Handler],
    *,
    keepalive_s: float = 15.0,
    flush_interval_s: float = 0.05,
) -> AsyncIterator[Served]:
    """A real uvicorn job server on a socket bound here (no port race), until the block ends."""
    config = ServerConfig(
        "test-server", "test", state_dir, keepalive_s=keepalive_s, flush_interval_s=flush_interval_s
    )
    job_app = create_app(config, handlers)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    async with open_job_server(job_app, sock):
        yield Served(f"http://127.0.0.1:{port}", job_app.service, port)


@dataclass
class Stream:
    """An SSE response read to its end: events as (seq, kind, data), comments, terminator."""

    events: list[tuple[int, str, dict]]
    comments: list[str]
    terminator: str | None

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _, _ in self.events]


def parse_sse(text: str) -> Stream:
    """Parse raw SSE text strictly: every frame is id/event/data, a comment, or a terminator."""
    import json

    events: list[tuple[int, str, dict]] = []
    comments: list[str] = []
    terminator = None
    for frame in text.split("\n\n"):
        if not frame:
            continue
        assert terminator is None, f"frame after the terminator: {frame!r}"
        lines = frame.split("\n")
        if lines[0].startswith(":"):
            comments.append(lines[0])
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        if set(fields) == {"data"}:
            terminator = fields["data"]
            continue
        assert set(fields) == {"id", "event", "data"}, frame
        events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return Stream(events, comments, terminator)


async def read_stream(url: str, **kwargs: object) -> Stream:
    """GET an SSE url with httpx and parse everything until the server ends the stream."""
    import httpx

    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", url, **kwargs) as response,  # type: ignore[arg-type]
    ):
        assert response.status_code == 200, await response.aread()
        body = (await response.aread()).decode()
    return parse_sse(body)


@dataclass(frozen=True)
class JobsKit:
    """Helpers for job-server tests, handed out as one fixture (conftest is not importable)."""

    serve = staticmethod(serve_jobs)
    read_stream = staticmethod(read_stream)
    parse_sse = staticmethod(parse_sse)
    wait_until = staticmethod(await_until)
    fill_disk = staticmethod(fill_disk)
