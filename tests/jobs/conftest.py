"""Serving a job server built from `jobs` alone, with handlers the tests define."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from jobs.server import Handler, JobService, ServerConfig, bind_socket, create_app, open_job_server


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


async def wait_until(
    predicate: Callable[[], Awaitable[bool] | bool], *, deadline_s: float = 10
) -> None:
    """Poll `predicate` until true; fail after `deadline_s` (waits on a condition, not a clock)."""
    with anyio.fail_after(deadline_s):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.005)


SMALL_DISK = "2m"  # tmpfs size for disk-full tests: fills in a blink, holds a queen's state


@pytest.fixture
def small_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """RBEE_HOME on its own small tmpfs, so a test can fill the disk for real (needs root,
    as here and in CI); unmounted afterwards."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    options = f"size={SMALL_DISK},mode=0700"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a disk-full test: {done.stderr.strip()}")
    monkeypatch.setenv("RBEE_HOME", str(mount))
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(folder: Path) -> Path:
    """Write a file in `folder` until the disk refuses even one page; returns its path."""
    import errno
    import os

    path = folder / "fill"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return path


@dataclass(frozen=True)
class JobsKit:
    """Helpers for job-server tests, handed out as one fixture (conftest is not importable)."""

    serve = staticmethod(serve_jobs)
    read_stream = staticmethod(read_stream)
    parse_sse = staticmethod(parse_sse)
    wait_until = staticmethod(wait_until)
    fill_disk = staticmethod(fill_disk)


@pytest.fixture
def kit() -> JobsKit:
    return JobsKit()
