"""Readers of a job's log, as the SSE route streams them: a live log from memory (and its
file for what has left memory), a finished one from its JSONL file in chunks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import anyio
import anyio.to_thread

from jobs import JobState, LogEntry, iter_jsonl, terminator
from jobs.server._joblog import JobLog

READ_CHUNK = 256 * 1024  # bytes read from a JSONL file per step


@dataclass(eq=False, slots=True)
class LogFile:
    """Where one log's JSONL file stands. Touched only by its store, on the loop; the file
    itself under `lock` (a write may run in a thread). Readers read up to `size`."""

    path: Path
    fd: int | None = None
    size: int = 0  # bytes of the file that hold the written events
    lock: anyio.Lock = field(default_factory=lambda: anyio.Lock(fast_acquire=True))


class LogReader(Protocol):
    """A reader's view of one log: `take` what is ready, `wait` for more, until `at_end`."""

    async def take(self) -> list[LogEntry]: ...
    async def wait(self) -> None: ...
    def at_end(self) -> bool: ...
    def terminator(self) -> str: ...
    def close(self) -> None: ...


class JsonlCursor:
    """Reads a JSONL log forward in chunks, remembering where it stopped (call in a thread)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[bytes] | None = None
        self._offset = 0
        self._rest = b""
        self.eof = False

    def read(self, after: int, limit: int | None = None) -> list[LogEntry]:
        """Entries with seq > `after` from the next chunk(s), stopping at byte `limit` (the
        part of a live file that is written) or the end; [] once there is nothing more."""
        out: list[LogEntry] = []
        while not out and not self.eof:
            if self._file is None:
                try:
                    self._file = self._path.open("rb")
                except FileNotFoundError:
                    self.eof = True
                    break
                self._file.seek(self._offset)
            size = READ_CHUNK if limit is None else min(READ_CHUNK, limit - self._offset)
            chunk = self._file.read(size) if size > 0 else b""
            self._offset += len(chunk)
            if not chunk:
                if limit is not None:
                    break  # caught up with what is written; more may come
                self.eof = True
                chunk, self._rest = self._rest + b"\n", b""
            else:
                chunk, self._rest = self._rest + chunk, b""
                cut = chunk.rfind(b"\n")
                chunk, self._rest = chunk[: cut + 1], chunk[cut + 1 :]
            out.extend(e for e in iter_jsonl(chunk.decode("utf-8", "replace")) if e.seq > after)
            if out:
                after = out[-1].seq
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class MemoryReader:
    """Reads a live (or recently finished) log: memory for the tail, the file behind it.

    Without a file (a store that keeps only memory), a reader that fell behind the tail
    goes on from the oldest event memory still holds: another server keeps the record.
    """

    def __init__(self, log: JobLog, after: int, file: LogFile | None) -> None:
        self._log = log
        self._file = file
        self._pos = min(max(after, 0), len(log)) if log.final else max(after, 0)
        self._cursor: JsonlCursor | None = None
        self._open = True
        log.readers += 1

    async def take(self) -> list[LogEntry]:
        log = self._log
        upto = log.written
        if self._pos >= upto:
            return []
        batch = log.slice(self._pos, upto)
        if batch is None:  # fell behind the memory tail
            if self._file is None:  # only memory is kept: go on from what it holds
                batch = log.slice(log.base, upto) or []
            else:
                batch = await self._take_from_file(self._file, upto)
        if batch:
            self._pos = batch[-1].seq
        return batch

    async def _take_from_file(self, file: LogFile, upto: int) -> list[LogEntry]:
        """What fell behind the memory tail, from the file (or memory, once it is gone)."""
        if self._cursor is None:
            self._cursor = JsonlCursor(file.path)
        batch = await anyio.to_thread.run_sync(self._cursor.read, self._pos, file.size)
        batch = [entry for entry in batch if entry.seq <= upto]
        if not batch:  # the file is gone (retention): carry on from memory
            batch = self._log.slice(self._pos, upto) or []
        return batch

    async def wait(self) -> None:
        await self._log.wait(self._pos)

    def at_end(self) -> bool:
        return self._log.is_ended and self._pos >= self._log.written

    def terminator(self) -> str:
        state, error = self._log.final or ("failed", "the log ended without a final state")
        return terminator(state, error)

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
        if self._open:
            self._open = False
            self._log.readers -= 1
            if not self._log.readers:
                self._log.unread_since = time.monotonic()


class FileReader:
    """Streams a finished job's JSONL file in chunks, so replay memory stays flat."""

    def __init__(self, path: Path, after: int, state: JobState, error: str | None) -> None:
        self._cursor = JsonlCursor(path)
        self._after = after
        self._final = (state, error)

    async def take(self) -> list[LogEntry]:
        if self._cursor.eof:
            return []
        out = await anyio.to_thread.run_sync(self._cursor.read, self._after)
        if out:
            self._after = out[-1].seq
        if self._cursor.eof:
            self._cursor.close()
        return out

    async def wait(self) -> None:
        pass  # a finished log has nothing more coming

    def at_end(self) -> bool:
        return self._cursor.eof

    def terminator(self) -> str:
        return terminator(*self._final)

    def close(self) -> None:
        self._cursor.close()
