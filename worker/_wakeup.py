"""A wake-up from the engine thread to the event loop that never blocks the thread."""

from __future__ import annotations

import contextlib
import os

import anyio


class Wakeup:
    """A pipe: `notify()` from any thread writes a byte (dropped when the pipe is full:
    a wake-up is already pending), `wait()` in the event loop returns once one came.
    Several notifies before a wait make one wake-up, so a step's outcomes go in one go.
    `close()` closes the pipe."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def notify(self) -> None:
        # Full: a wake-up is pending. Closed: the loop has stopped reading.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"!")

    async def wait(self) -> None:
        while True:
            try:
                os.read(self._read, 4096)  # b"" (closed) ends the wait too
                return
            except BlockingIOError:
                await anyio.wait_readable(self._read)

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
