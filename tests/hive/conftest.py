"""Starting real hives for tests, and a loopback queen stand-in that records heartbeats.

- `spawn_hive(home, *args)`: the real program (`python -m hive --port 0`), awaited via its
  `ready` narration line, stopped with SIGTERM on exit; yields a `HiveProcess`.
- `beat_recorder(tmp)`: a real HTTP server on loopback answering POST /v1/heartbeats with
  204 and keeping every beat; can be stopped and started again on the same port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs.beats import HiveBeat
from jobs.server import ServerConfig, bind_socket, create_app, open_job_server
from narration_core import CAPTURE_ENV, NarrationEvent, parse_line

READY_DEADLINE_S = 30.0  # a cold interpreter importing uvicorn+pydantic on a busy 2-core box
STOP_DEADLINE_S = 20.0  # SIGTERM to exit, workers included (their grace is 5 s)


@dataclass
class HiveProcess:
    process: anyio.abc.Process
    url: str
    lines: list[str] = field(default_factory=list)  # stdout so far, one line each
    stderr: bytearray = field(default_factory=bytearray)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def events(self) -> list[NarrationEvent]:
        return [e for line in self.lines if (e := parse_line(line)) is not None]

    def actions(self) -> list[str]:
        return [e.action for e in self.events()]

    async def wait_line(self, fragment: str, *, deadline_s: float = READY_DEADLINE_S) -> str:
        """The first stdout line holding `fragment`, waiting for it to be printed."""
        with anyio.fail_after(deadline_s):
            while True:
                for line in self.lines:
                    if fragment in line:
                        return line
                await self.changed.wait()


@asynccontextmanager
async def spawn_hive(home: Path, *args: str) -> AsyncIterator[HiveProcess]:
    """Run the real rbee-hive with RBEE_HOME=home until its `ready` line; SIGTERM on exit."""
    env = {**os.environ, "RBEE_HOME": str(home), CAPTURE_ENV: "1"}
    command = [sys.executable, "-m", "hive", "--port", "0", *args]
    process = await anyio.open_process(command, env=env, stderr=subprocess.PIPE)
    assert process.stdout is not None
    stdout = BufferedByteReceiveStream(process.stdout)
    handle = HiveProcess(process, "")
    ready = anyio.Event()

    async def read_lines() -> None:
        while True:
            try:
                line = (await stdout.receive_until(b"\n", 1 << 20)).decode()
            except (anyio.EndOfStream, anyio.IncompleteRead):
                handle.changed.set()
                return
            handle.lines.append(line)
            handle.changed.set()
            handle.changed = anyio.Event()
            event = parse_line(line)
            if event is not None and event.action == "ready" and event.actor == "rbee-hive":
                handle.url = re.search(r"on (http://\S+?);?(\s|$)", event.human)[1]  # type: ignore[index]
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
                with anyio.fail_after(STOP_DEADLINE_S):
                    await process.wait()


@dataclass
class BeatRecorder:
    """A queen stand-in: keeps every heartbeat POSTed to it."""

    state_dir: Path
    port: int = 0
    beats: list[HiveBeat] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_beats(self, count: int, *, deadline_s: float = 20.0) -> list[HiveBeat]:
        with anyio.fail_after(deadline_s):
            while len(self.beats) < count:
                await self.arrived.wait()
        return self.beats

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[BeatRecorder]:
        """Serve on `port` (a free one the first time, the same one after)."""

        async def heartbeats(request: Request) -> Response:
            self.beats.append(HiveBeat.model_validate_json(await request.body()))
            self.arrived.set()
            self.arrived = anyio.Event()
            return Response(status_code=204)

        job_app = create_app(
            ServerConfig("queen-stand-in", "test", self.state_dir),
            {},
            routes=[Route("/v1/heartbeats", heartbeats, methods=["POST"])],
        )
        sock = bind_socket("127.0.0.1", self.port)
        self.port = sock.getsockname()[1]
        async with open_job_server(job_app, sock):
            yield self
