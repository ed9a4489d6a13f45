"""An `EarlyChild` (started before the event loop) as the anyio `Process` a capture drives.

Its pipes are read straight from their file descriptors on the event loop (the bytes
held before the take-over come first), and its exit is awaited on a pidfd, so the
capture stops, drains and reaps it exactly as a child it spawned itself.
"""

from __future__ import annotations

import contextlib
import os
import signal

import anyio
import anyio.to_thread
from anyio.abc import ByteReceiveStream, ByteSendStream, Process

from narration_core._early import EarlyChild


class _PipeReader(ByteReceiveStream):
    """One of the child's pipes: the bytes held before the take-over, then the pipe."""

    def __init__(self, fd: int, held: list[bytes], ended: bool) -> None:
        self._fd: int | None = fd
        self._held = held[::-1]  # popped from the end: the first chunk last
        self._ended = ended
        os.set_blocking(fd, False)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._held:  # as read while held: at most early.READ_SIZE each
            return self._held.pop()
        while True:
            if self._fd is None:
                raise anyio.ClosedResourceError
            if self._ended:
                raise anyio.EndOfStream
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)
                continue
            if not data:
                self._ended = True
                raise anyio.EndOfStream
            return data

    async def aclose(self) -> None:
        """Close this end: the child's next write to the pipe fails (SIGPIPE)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class AdoptedProcess(Process):
    """The anyio face of a child started by `EarlyChild`, once taken over."""

    def __init__(self, early: EarlyChild) -> None:
        self._popen = early.popen
        held, ended = early.take_over()
        # The pipe objects give their descriptors up: the readers own and close them.
        self._readers = {
            name: _PipeReader(os.dup(fd), held[name], ended[name]) for name, fd in early.fds.items()
        }
        for stream in (self._popen.stdout, self._popen.stderr):
            if stream is not None:
                stream.close()

    async def wait(self) -> int:
        code = self._popen.poll()
        while code is None:
            try:
                pidfd = os.pidfd_open(self._popen.pid)
            except OSError:  # no pidfd (kernel < 5.3): a thread waits instead
                return await anyio.to_thread.run_sync(self._popen.wait, abandon_on_cancel=True)
            try:
                await anyio.wait_readable(pidfd)
            finally:
                os.close(pidfd)
            code = self._popen.poll()
        return code

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def send_signal(self, sig: signal.Signals) -> None:
        if self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(sig)

    async def aclose(self) -> None:
        for reader in self._readers.values():
            await reader.aclose()
        await self.wait()

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    @property
    def stdin(self) -> ByteSendStream | None:
        return None  # the child reads the keeper's own stdin, or /dev/null

    @property
    def stdout(self) -> ByteReceiveStream:
        return self._readers["stdout"]

    @property
    def stderr(self) -> ByteReceiveStream:
        return self._readers["stderr"]
