"""Per-job append-only event logs: in memory for live readers, JSON lines on disk for ever.

A job's `JobLog` numbers events 1, 2, 3… Appends come from any thread (narration from
`anyio.to_thread` work lands here through the job's narration sink) and never block on
readers: a reader keeps its own index into the log and waits for "something was
appended", so a slow reader neither slows the emitter nor loses events.

`EventStore` owns every log: a flusher task writes new entries to `<folder>/<job>.jsonl`
in batches (every `flush_interval_s` and when a job ends; no fsync per event, so a
`kill -9` loses at most the last interval), and finished logs leave memory after a while;
readers of those stream the JSONL file back in chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread

from jobs.events import EventKind, JobState, LogEntry, parse_jsonl, terminator

FLUSH_INTERVAL_S = 0.2  # how stale the on-disk log of a running job may be
KEEP_FINISHED = 16  # finished logs kept in memory for late readers, newest first
FINISHED_TTL_S = 60.0  # seconds a finished log stays in memory before readers go to disk
MAX_BATCH = 2048  # events handed to a reader at once (bounds one SSE write to ~1 MB)
READ_CHUNK = 256 * 1024  # bytes read from a JSONL file per step


def _loop_waker() -> Callable[[Callable[[], None]], Any]:
    """A non-blocking "run this on the event loop soon" for other threads.

    anyio's `from_thread.run_sync` waits for the result, and a narration sink must never
    block, so use the loop's own thread-safe scheduler. rbee runs anyio on asyncio
    (asyncssh needs it), so that is the only backend served here.
    """
    return asyncio.get_running_loop().call_soon_threadsafe


class JobLog:
    """One job's events in memory. Create on the event loop (via `EventStore.create`)."""

    def __init__(self, job_id: str, path: Path) -> None:
        self.job_id = job_id
        self.path = path
        self._entries: list[LogEntry] = []
        self._final: tuple[JobState, str | None] | None = None
        self._lock = threading.Lock()
        self._changed: anyio.Event | None = None  # created by the first waiter, set on append
        self._loop_thread = threading.get_ident()
        self._call_soon = _loop_waker()
        self._wake_pending = False
        # Flusher state, touched only under `flush_lock` on the loop.
        self.flush_lock = anyio.Lock()
        self.written = 0
        self.file: IO[str] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def final(self) -> tuple[JobState, str | None] | None:
        """(state, error) once the final state event is in the log, else None."""
        return self._final

    def append(self, kind: EventKind, data: Any) -> int:
        """Add an event from any thread; returns its seq, or 0 if the log is already closed
        (a straggler after the job ended: stdout has it, the stream has ended)."""
        return self._append(kind, data, None)

    def extend(self, entries: list[LogEntry]) -> int:
        """Append already encoded events (a relay hop's batch) from any thread, numbering
        them in order; returns the last seq, or 0 if the log is closed. The entries become
        the log's own, so pass fresh ones (e.g. straight from an `SSEDecoder`)."""
        with self._lock:
            if self._final is not None:
                return 0
            seq = len(self._entries)
            for entry in entries:
                seq += 1
                entry.seq = seq
            self._entries.extend(entries)
        self._wake()
        return seq

    def close(self, state: JobState, data: dict[str, Any]) -> int:
        """Append the final `state` event and end the log; later appends are dropped."""
        return self._append("state", data, (state, data.get("error")))

    def _append(self, kind: EventKind, data: Any, final: tuple[JobState, str | None] | None) -> int:
        encoded = LogEntry.encode(0, kind, data)  # encode outside the lock
        with self._lock:
            if self._final is not None:
                return 0
            encoded.seq = seq = len(self._entries) + 1
            self._entries.append(encoded)
            if final is not None:
                self._final = final
        self._wake()
        return seq

    def slice(self, after: int, limit: int = MAX_BATCH) -> list[LogEntry]:
        """Entries with seq > `after`, at most `limit` (seq n sits at index n - 1)."""
        with self._lock:
            return self._entries[after : after + limit]

    async def wait(self, after: int) -> None:
        """Return once the log holds more than `after` entries or has ended. Cancel-safe."""
        while len(self._entries) <= after and self._final is None:
            event = self._changed
            if event is None:
                event = self._changed = anyio.Event()
            await event.wait()

    def _wake(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._wake_on_loop()
            return
        with self._lock:
            if self._wake_pending:  # one scheduled wake covers every append before it runs
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to wake
            self._call_soon(self._wake_on_loop)

    def _wake_on_loop(self) -> None:
        self._wake_pending = False
        event, self._changed = self._changed, None
        if event is not None:
            event.set()


class LogReader(Protocol):
    """A reader's view of one log: `take` what is ready, `wait` for more, until `at_end`."""

    async def take(self) -> list[LogEntry]: ...
    async def wait(self) -> None: ...
    def at_end(self) -> bool: ...
    def terminator(self) -> str: ...
    def close(self) -> None: ...


class MemoryReader:
    """Reads a live (or recently finished) log by index; holds no lock between calls."""

    def __init__(self, log: JobLog, after: int) -> None:
        self._log = log
        self._pos = min(max(after, 0), len(log)) if log.final else max(after, 0)

    async def take(self) -> list[LogEntry]:
        batch = self._log.slice(self._pos)
        if batch:
            self._pos = batch[-1].seq
        return batch

    async def wait(self) -> None:
        await self._log.wait(self._pos)

    def at_end(self) -> bool:
        return self._log.final is not None and self._pos >= len(self._log)

    def terminator(self) -> str:
        state, error = self._log.final or ("failed", "the log ended without a final state")
        return terminator(state, error)

    def close(self) -> None:
        pass


class FileReader:
    """Streams a finished job's JSONL file in chunks, so replay memory stays flat."""

    def __init__(self, path: Path, after: int, state: JobState, error: str | None) -> None:
        self._path = path
        self._after = after
        self._final = (state, error)
        self._file: IO[bytes] | None = None
        self._rest = b""
        self._eof = not path.exists()

    async def take(self) -> list[LogEntry]:
        if self._eof:
            return []
        return await anyio.to_thread.run_sync(self._read_chunk)

    def _read_chunk(self) -> list[LogEntry]:
        if self._file is None:
            self._file = self._path.open("rb")
        out: list[LogEntry] = []
        while not out and not self._eof:
            chunk = self._file.read(READ_CHUNK)
            if not chunk:
                self._eof = True
                chunk, self._rest = self._rest + b"\n", b""
            else:
                chunk, self._rest = self._rest + chunk, b""
                cut = chunk.rfind(b"\n")
                chunk, self._rest = chunk[: cut + 1], chunk[cut + 1 :]
            after = self._after
            for line in chunk.decode("utf-8", "replace").splitlines():
                entry = parse_jsonl(line)
                if entry is not None and entry.seq > after:
                    out.append(entry)
            if out:
                self._after = out[-1].seq
        if self._eof:
            self.close()
        return out

    async def wait(self) -> None:
        pass  # a finished log has nothing more coming

    def at_end(self) -> bool:
        return self._eof

    def terminator(self) -> str:
        return terminator(*self._final)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class EventStore:
    """Every job's log: live ones in memory, all of them as JSONL files in `folder`."""

    def __init__(
        self,
        folder: Path,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        keep_finished: int = KEEP_FINISHED,
        finished_ttl_s: float = FINISHED_TTL_S,
    ) -> None:
        self.folder = folder
        self.flush_interval_s = flush_interval_s
        self.keep_finished = keep_finished
        self.finished_ttl_s = finished_ttl_s
        self._live: dict[str, JobLog] = {}
        self._finished: OrderedDict[str, tuple[JobLog, float]] = OrderedDict()

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.jsonl"

    def create(self, job_id: str) -> JobLog:
        """A new, empty log for `job_id`; call on the event loop."""
        log = JobLog(job_id, self.path(job_id))
        self._live[job_id] = log
        return log

    def memory(self, job_id: str) -> JobLog | None:
        """The in-memory log of a running or recently finished job, else None."""
        log = self._live.get(job_id)
        if log is None and (hit := self._finished.get(job_id)) is not None:
            log = hit[0]
        return log

    def reader(
        self, job_id: str, after: int, final: tuple[JobState, str | None] | None
    ) -> LogReader:
        """A reader from seq `after` on: memory if the log is there, else the file (then
        `final`, the registry's state and error, supplies the terminator)."""
        log = self.memory(job_id)
        if log is not None:
            return MemoryReader(log, after)
        state, error = final or ("failed", "the job's log is gone")
        return FileReader(self.path(job_id), after, state, error)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Flush live logs every interval and evict old finished ones, until cancelled;
        flushes everything once more on the way out."""
        self.folder.mkdir(parents=True, exist_ok=True)
        task_status.started()
        try:
            while True:
                await anyio.sleep(self.flush_interval_s)
                for log in list(self._live.values()):
                    await self.flush(log)
                self._evict()
        finally:
            with anyio.CancelScope(shield=True):
                for log in list(self._live.values()):
                    await self.flush(log, close=True)

    async def flush(self, log: JobLog, *, close: bool = False) -> None:
        """Write the entries not yet on disk (in a thread) and flush the file buffer."""
        async with log.flush_lock:
            batch = log.slice(log.written, len(log))
            if not batch and not close:
                return
            await anyio.to_thread.run_sync(_write, log, batch, close)
            log.written += len(batch)

    async def finish(self, log: JobLog) -> None:
        """Flush a closed log completely and keep it in memory only for a while."""
        await self.flush(log, close=True)
        self._live.pop(log.job_id, None)
        self._finished[log.job_id] = (log, time.monotonic())
        self._evict()

    def _evict(self) -> None:
        cutoff = time.monotonic() - self.finished_ttl_s
        while self._finished and (
            len(self._finished) > self.keep_finished
            or next(iter(self._finished.values()))[1] < cutoff
        ):
            self._finished.popitem(last=False)

    async def append_final(self, job_id: str, state: JobState, data: dict[str, Any]) -> None:
        """Append the final state event to the file of a job a crash left open."""
        await anyio.to_thread.run_sync(_append_final, self.path(job_id), state, data)

    async def delete(self, job_ids: list[str]) -> None:
        """Forget logs pruned by retention."""
        for job_id in job_ids:
            self._finished.pop(job_id, None)
        paths = [self.path(job_id) for job_id in job_ids]
        await anyio.to_thread.run_sync(_unlink_all, paths)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _write(log: JobLog, batch: list[LogEntry], close: bool) -> None:
    if log.file is None:
        log.path.parent.mkdir(parents=True, exist_ok=True)
        log.file = log.path.open("a", encoding="utf-8", buffering=1 << 16)
    if batch:
        log.file.write("".join(entry.jsonl() for entry in batch))
    log.file.flush()
    if close:
        log.file.close()
        log.file = None


def _append_final(path: Path, state: JobState, data: dict[str, Any]) -> None:
    last = 0
    raw = path.read_bytes() if path.exists() else b""
    for line in raw.decode("utf-8", "replace").splitlines():
        entry = parse_jsonl(line)
        if entry is not None:
            last = entry.seq
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        if raw and not raw.endswith(b"\n"):
            f.write("\n")  # end the torn line a kill left behind; readers skip it
        f.write(LogEntry.encode(last + 1, "state", {**data, "state": state}).jsonl())
