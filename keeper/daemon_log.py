"""A daemon's log file: followed while the daemon starts (`LogTail`, relaying each line as
narration), and printed by `keeper queen logs` and `keeper hive logs` (`print_log`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import anyio

from narration_core import LineSplitter, relay_lines


class LogSource(Protocol):
    """Where a daemon's log is read: its host, local or over SSH (keeper.launch.Host)."""

    async def read_log(self, path: Path, offset: int) -> bytes: ...
    async def log_size(self, path: Path) -> int: ...


FOLLOW_POLL_S = 0.2  # seconds between looks at a followed log (`logs -f`)
TAIL_CHUNK = 256 * 1024  # bytes read from the log per look
DRAIN_WAIT_S = 5.0  # at most this long for the last of a log to arrive (a remote tail)
DRAIN_POLL_S = 0.05  # between looks while it does


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
        await self.pump()
        end = await self.host.log_size(self.log_path)
        with anyio.move_on_after(DRAIN_WAIT_S):
            while self.offset < end:
                await anyio.sleep(DRAIN_POLL_S)
                await self.pump()
        self._relay(self.splitter.flush())

    def _relay(self, lines: list[str]) -> None:
        relay_lines(lines, "stdout", actor=self.program, origin=self.origin)


def print_log(path: Path, *, program: str, as_json: bool, follow: bool, lines: int) -> None:
    """Print the last `lines` lines of a daemon's log, sanitised (or as JSON events); with
    `follow`, keep printing what is appended, across a restart's rotation, until Ctrl-C."""
    data = path.read_bytes()
    show, flush = log_printer(program, as_json=as_json)
    for raw in data.splitlines()[-lines:] if lines > 0 else []:
        show(raw.decode("utf-8", "replace"))
    flush()
    offset = len(data)
    splitter = LineSplitter()
    while follow:  # until Ctrl-C (exit 130)
        try:
            with path.open("rb") as f:
                if os.fstat(f.fileno()).st_size < offset:  # a new start rotated the log
                    offset = 0
                f.seek(offset)
                chunk = f.read(TAIL_CHUNK)
        except FileNotFoundError:  # between the rotation and the new daemon's first line
            chunk = b""
        if chunk:
            offset += len(chunk)
            for line in splitter.feed(chunk):
                show(line)
            flush()
        else:
            time.sleep(FOLLOW_POLL_S)


def log_printer(program: str, *, as_json: bool) -> tuple[Callable[[str], None], Callable[[], None]]:
    """(show, flush) for a daemon's log lines on stdout: sanitised text, or with --json
    one event per line in the shape of every other --json output."""
    import json
    import sys

    from narration_core import NarrationEvent, parse_line, strip_control

    out = sys.stdout

    def show(line: str) -> None:
        if as_json:
            event = parse_line(line) or NarrationEvent(program, "output", line, stream="stdout")
            record = {"event": "output" if event.stream else "narration", **event.to_dict()}
            out.write(json.dumps(record) + "\n")
        else:
            out.write(strip_control(line) + "\n")

    return show, out.flush
