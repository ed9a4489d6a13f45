"""Starting the queen as tests need it: in-process uvicorn, or the real `queen-rbee` process.

The `queen` fixture (tests/queen/conftest.py) is a `start_queen` with default settings.
- `start_queen(settings)`: async context manager serving `create_app(settings)` on a socket
  bound here (port 0, so no race) and yielding a `RunningQueen`.
- `queen`: a running in-process queen with default settings under the test's RBEE_HOME.
- `spawn_queen(home, *args)`: the real program (`python -m queen --port 0`), awaited via its
  `ready` narration line, stopped with SIGTERM on exit; yields a `tests.support.RunningProgram`.

Both point the queen's default `localhost` hive at `closed_hive_url()`, never at the
default port 7835: another rbee may run on this machine, and a test must not reach it.
A test that wants a real hive passes its own (`hives=` / `--hive localhost=URL`).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from jobs import RbeePaths
from jobs.server import JobServer, bind_socket, open_job_server
from queen.app import create_app
from queen.settings import QueenSettings
from tests.support._programs import RunningProgram, closed_hive_url, spawn_program, url_of


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
    """Settings for a test queen under `home` (its `localhost` hive at a closed port);
    keyword overrides replace fields."""
    import dataclasses

    base = QueenSettings.build(
        paths=RbeePaths.resolve(home), env={}, hives=[f"localhost={closed_hive_url()}"]
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def spawn_queen(home: Path, *args: str) -> AsyncIterator[RunningProgram]:
    """Run the real queen-rbee with RBEE_HOME=home until its `ready` line; SIGTERM on exit.
    Its `localhost` hive is at a closed port unless `args` name another (a later --hive
    wins)."""
    argv = [
        sys.executable,
        "-m",
        "queen",
        "--port",
        "0",
        "--hive",
        f"localhost={closed_hive_url()}",
    ]
    argv += args
    async with spawn_program(argv, home=home, ready=url_of("ready")) as queen:
        yield queen
