"""A starting daemon's log, followed: what it appends is relayed line by line as narration
(its own actors, an origin saying where it runs), as if its output were piped to us.

The same splitter and relay as a piped child (narration_core), so the keeper's terminal
and the queen's job show a daemon's startup lines alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from narration_core import LineSplitter, relay_lines

TAIL_CHUNK = 256 * 1024  # bytes read from the log per look
DRAIN_WAIT_S = 5.0  # at most this long for the last of a log to arrive (a remote tail)
DRAIN_POLL_S = 0.05  # between looks while it does


class LogSource(Protocol):
    """Where a daemon's log is read: its host, local or over SSH (daemons.Host)."""

    async def read_log(self, path: Path, offset: int) -> bytes: ...
    async def log_size(self, path: Path) -> int: ...


class LogTail:
    """Relays what a daemon appends to its log, line by line, as if it were piped."""

    def __init__(self, host: LogSource, log_path: Path, *, program: str, origin: str) -> None:
        self.host = host
        self.log_path = log_path
        self.program = program
        self.origin = origin
        self.offset = 0
        self.splitter = LineSplitter()

    async def pump(self) -> None:
        while data := await self.host.read_log(self.log_path, self.offset):
            self.offset += len(data)
            self._relay(self.splitter.feed(data))

    async def drain(self) -> None:
        """Relay the rest of the log: up to its size now, which a remote `tail -F` may not
        have delivered yet when the daemon has just exited (bounded by DRAIN_WAIT_S)."""
        import anyio

        await self.pump()
        end = await self.host.log_size(self.log_path)
        with anyio.move_on_after(DRAIN_WAIT_S):
            while self.offset < end:
                await anyio.sleep(DRAIN_POLL_S)
                await self.pump()
        self._relay(self.splitter.flush())

    def _relay(self, lines: list[str]) -> None:
        relay_lines(lines, "stdout", actor=self.program, origin=self.origin)
