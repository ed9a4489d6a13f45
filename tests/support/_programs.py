"""Running rbee's programs as tests need them: a real process, its stdout read line by line.

    async with spawn_program(argv, home=rbee_home, ready=url_of("ready")) as program:
        program.url, program.lines, program.actions()

`ready` reads each narration line and returns the URL once the program is serving; the
block starts then (under a deadline). Leaving it sends SIGTERM and waits for the exit.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from narration_core import CAPTURE_ENV, NarrationEvent, parse_line

START_DEADLINE_S = 30.0  # a cold interpreter importing uvicorn+pydantic on a busy 2-core box
STOP_DEADLINE_S = 20.0  # SIGTERM to exit, children included (their grace is 5 s)
URL = re.compile(r"(https?://[^\s;]+)")

Ready = Callable[[NarrationEvent], str | None]


_CLOSED: list[socket.socket] = []  # bound, never listening: held for the whole session
# (here, not in a conftest: pytest may import a conftest twice, under two names)


def closed_hive_url() -> str:
    """A loopback URL where a connection is certainly refused: the port is bound by this
    test process (so nothing else can take it) and never listened on."""
    if not _CLOSED:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        _CLOSED.append(sock)
    return f"http://127.0.0.1:{_CLOSED[0].getsockname()[1]}"


def url_of(action: str) -> Ready:
    """A `ready` check: the first URL in the human text of the line with this action."""

    def check(event: NarrationEvent) -> str | None:
        found = URL.search(event.human) if event.action == action else None
        return found[1] if found else None

    return check


@dataclass
class RunningProgram:
    process: anyio.abc.Process
    url: str = ""
    token: str | None = None  # the credential its callers present (a hive's, a worker's)
    lines: list[str] = field(default_factory=list)  # stdout (and stderr if merged) so far
    stderr: bytearray = field(default_factory=bytearray)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def events(self) -> list[NarrationEvent]:
        return [e for line in self.lines if (e := parse_line(line)) is not None]

    def actions(self) -> list[str]:
        return [e.action for e in self.events()]

    async def wait_action(self, action: str, *, deadline_s: float = START_DEADLINE_S) -> None:
        """Wait until a narration line with `action` has been printed."""
        with anyio.fail_after(deadline_s):
            while action not in self.actions():
                await self.changed.wait()


@asynccontextmanager
async def spawn_program(
    argv: Sequence[str],
    *,
    home: Path,
    ready: Ready,
    merge_stderr: bool = False,
    env: dict[str, str] | None = None,
) -> AsyncIterator[RunningProgram]:
    """Run `argv` with RBEE_HOME=home (and the capture marker, so each line is flushed),
    and `env` added to this process's environment."""
    env = {**os.environ, **(env or {}), "RBEE_HOME": str(home), CAPTURE_ENV: "1"}
    stderr = subprocess.STDOUT if merge_stderr else subprocess.PIPE
    process = await anyio.open_process(list(argv), env=env, stderr=stderr)
    assert process.stdout is not None
    stdout = BufferedByteReceiveStream(process.stdout)
    handle = RunningProgram(process)
    started = anyio.Event()

    def changed() -> None:
        handle.changed.set()
        handle.changed = anyio.Event()

    async def read_lines() -> None:
        while True:
            try:
                line = (await stdout.receive_until(b"\n", 1 << 20)).decode()
            except (anyio.EndOfStream, anyio.IncompleteRead):
                changed()
                return
            handle.lines.append(line)
            event = parse_line(line)
            if not started.is_set() and event is not None and (url := ready(event)):
                handle.url = url
                started.set()
            changed()

    async def read_stderr() -> None:
        if process.stderr is not None:
            async for chunk in process.stderr:
                handle.stderr.extend(chunk)

    async with process, anyio.create_task_group() as tg:
        tg.start_soon(read_lines)
        tg.start_soon(read_stderr)
        try:
            with anyio.fail_after(START_DEADLINE_S):
                await started.wait()
            yield handle
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                with anyio.fail_after(STOP_DEADLINE_S):
                    await process.wait()
