"""Starting the queen as tests need it: in-process uvicorn, or the real `queen-rbee` process.

Reusable across test folders (hoist to tests/conftest.py when keeper tests need them):
- `start_queen(settings)`: async context manager serving `create_app(settings)` on a socket
  bound here (port 0, so no race) and yielding a `RunningQueen`.
- `queen`: a running in-process queen with default settings under the test's RBEE_HOME.
- `spawn_queen(home, *args)`: the real program (`python -m queen --port 0`), awaited via its
  `ready` narration line, stopped with SIGTERM on exit; yields a `QueenProcess`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from jobs.paths import RbeePaths
from jobs.server import JobServer, bind_socket, open_job_server
from narration_core import CAPTURE_ENV, parse_line
from queen.app import create_app
from queen.settings import QueenSettings

READY_DEADLINE_S = 20.0  # a cold interpreter importing uvicorn+pydantic on a busy 2-core box


@dataclass
class RunningQueen:
    url: str
    server: JobServer
    settings: QueenSettings


@asynccontextmanager
async def start_queen(settings: QueenSettings) -> AsyncIterator[RunningQueen]:
    """Serve a queen in this process until the block ends (jobs cancelled, then shutdown)."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    async with open_job_server(create_app(settings), sock) as server:
        yield RunningQueen(f"http://127.0.0.1:{port}", server, settings)


def queen_settings(home: Path, **overrides: object) -> QueenSettings:
    """Settings for a test queen under `home`; keyword overrides replace fields."""
    import dataclasses

    base = QueenSettings.build(paths=RbeePaths.resolve(home), env={})
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def queen(rbee_home: Path) -> AsyncIterator[RunningQueen]:
    async with start_queen(queen_settings(rbee_home)) as running:
        yield running


@dataclass
class QueenProcess:
    process: anyio.abc.Process
    url: str
    lines: list[str] = field(default_factory=list)  # stdout so far, one narration line each
    stderr: bytearray = field(default_factory=bytearray)

    def actions(self) -> list[str]:
        return [e.action for line in self.lines if (e := parse_line(line)) is not None]


@asynccontextmanager
async def spawn_queen(home: Path, *args: str) -> AsyncIterator[QueenProcess]:
    """Run the real queen-rbee with RBEE_HOME=home until its `ready` line; SIGTERM on exit."""
    env = {**os.environ, "RBEE_HOME": str(home), CAPTURE_ENV: "1"}
    command = [sys.executable, "-m", "queen", "--port", "0", *args]
    process = await anyio.open_process(command, env=env, stderr=subprocess.PIPE)
    assert process.stdout is not None
    stdout = BufferedByteReceiveStream(process.stdout)
    handle = QueenProcess(process, "")
    ready = anyio.Event()

    async def read_lines() -> None:
        while True:
            try:
                line = (await stdout.receive_until(b"\n", 1 << 20)).decode()
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return
            handle.lines.append(line)
            event = parse_line(line)
            if event is not None and event.action == "ready":
                handle.url = event.human.rsplit(" ", 1)[-1]  # "Queen ready on <url>"
                ready.set()

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            handle.stderr.extend(chunk)

    async with process, anyio.create_task_group() as tg:
        tg.start_soon(read_lines)
        tg.start_soon(read_stderr)
        try:
            with anyio.fail_after(READY_DEADLINE_S):
                await ready.wait()
            yield handle
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with anyio.fail_after(READY_DEADLINE_S):
                    await process.wait()
