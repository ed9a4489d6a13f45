"""Per-job append-only event logs: on disk before any reader sees them, a bounded tail in memory.

A job's `JobLog` (_joblog.py) numbers events 1, 2, 3… and takes appends from any thread
without blocking; `EventStore` here owns every log and its file. Its flusher writes each
log's new events to `<folder>/<job>.jsonl` in one `write` (whatever arrived since its last
pass goes in the next: batches grow with the load) and only then lets readers see them
(`written`). A batch of up to INLINE_WRITE_BYTES is written on the event loop itself: a
`write` into the page cache costs microseconds, far less than a hop to a worker thread
and back (~0.1-2 ms, more on a busy machine), and that hop sits between every event and
its readers. Bigger batches, and every write for a while after an inline one was slow (a
slow or throttled disk), go to a thread so the loop never stalls.

So an event is never sent before it is in the file: durable against a kill -9 of the
server (the OS has it), not against a power cut (no fsync). The file's last seq is therefore
at least every id a client was ever sent, and crash recovery's `failed` event takes the next.

Memory stays bounded: a log keeps about `memory_tail` written events; a reader that falls
behind reads older ones from the file, then comes back to memory, by seq (no gap, no
duplicate; _logreaders.py). Finished logs stay in memory for a while; later readers read the file.

Disk full (see _storage.py): every batch first reserves its bytes plus FINAL_SLACK past the
end of its file. When a write fails, that job cannot go on: its events not yet written are
dropped (nobody saw them), its `failed` state event goes into the slack kept for it, and
`on_abort` tells the service to stop the job. Other jobs carry on. A final event that still
cannot be written is retried every tick; its readers wait for it.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.abc
import anyio.to_thread

from jobs import (
    JobState,
    LogEntry,
    StorageError,
    check_room,
    is_final,
    parse_jsonl,
    storage_error,
)
from jobs.server import _storage as storage
from jobs.server._joblog import JobLog
from jobs.server._logreaders import READ_CHUNK, FileReader, LogFile, LogReader, MemoryReader

FLUSH_INTERVAL_S = 0.2  # housekeeping tick: evict finished logs, retry refused writes
KEEP_FINISHED = 16  # finished logs kept in memory for late readers, newest first
FINISHED_TTL_S = 60.0  # seconds a finished log stays in memory before readers go to disk
MEMORY_TAIL = 1024  # written events a log keeps in memory (~1 KB each); older ones: the file
INLINE_WRITE_BYTES = 256 * 1024  # batches up to this are written on the loop (~5-50 µs each)
SLOW_WRITE_S = 0.005  # an inline write slower than this means the disk is slow right now...
SLOW_BACKOFF_S = 1.0  # ...so every write goes to a thread for this long, then inline is retried
FILE_MODE = 0o600  # logs hold job output: the owner's only
FOLDER_MODE = 0o700

AbortHandler = Callable[[JobLog, StorageError], None]


class EventStore:
    """Every job's log: live ones in memory, all of them as JSONL files in `folder`."""

    writes_files: ClassVar[bool] = True  # False in a store that keeps only memory

    def __init__(
        self,
        folder: Path,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        keep_finished: int = KEEP_FINISHED,
        finished_ttl_s: float = FINISHED_TTL_S,
        memory_tail: int = MEMORY_TAIL,
        on_abort: AbortHandler | None = None,
    ) -> None:
        self.folder = folder
        self.flush_interval_s = flush_interval_s
        self.keep_finished = keep_finished
        self.finished_ttl_s = finished_ttl_s
        self.memory_tail = memory_tail
        self.on_abort = on_abort
        self.last_error: StorageError | None = None  # the latest failed write, until one works
        self._live: dict[str, JobLog] = {}
        self._finished: OrderedDict[str, tuple[JobLog, float]] = OrderedDict()
        self._dirty: dict[JobLog, None] = {}  # logs with unwritten events, in arrival order
        self._retry: dict[JobLog, None] = {}  # logs whose write failed: tried every tick
        self._wakeup = anyio.Event()
        self._threaded_until = 0.0  # monotonic time until which writes go to a thread
        # Each log's file, for as long as the log itself lives (readers of a finished one).
        self._files: weakref.WeakKeyDictionary[JobLog, LogFile] = weakref.WeakKeyDictionary()

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.jsonl"

    def create(self, job_id: str) -> JobLog:
        """A new, empty log for `job_id`; call on the event loop."""
        log = JobLog(job_id, self._mark_dirty)
        self._live[job_id] = log
        if self.writes_files:
            self._files[log] = LogFile(self.path(job_id))
        return log

    def file(self, log: JobLog) -> LogFile | None:
        """Where `log`'s file stands (None in a store that keeps only memory)."""
        return self._files.get(log)

    def _mark_dirty(self, log: JobLog) -> None:
        self._dirty[log] = None
        self._wakeup.set()

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
            return MemoryReader(log, after, self.file(log))
        state, error = final or ("failed", "the job's log is gone")
        return FileReader(self.path(job_id), after, state, error)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Write new events as they arrive, retry refused writes and evict old finished logs
        every tick, until cancelled; flushes everything once more on the way out."""
        if self.writes_files:
            await anyio.to_thread.run_sync(_make_folder, self.folder)
        task_status.started()
        next_tick = time.monotonic() + self.flush_interval_s
        try:
            while True:
                with anyio.move_on_after(max(0.0, next_tick - time.monotonic())):
                    await self._wakeup.wait()
                self._wakeup = anyio.Event()  # before taking the batch: no wake-up is lost
                logs, self._dirty = self._dirty, {}
                if time.monotonic() >= next_tick:  # a tick: retry refused writes too
                    next_tick = time.monotonic() + self.flush_interval_s
                    logs.update(self._retry)
                for log in logs:
                    await self.flush(log)
                self._evict()
        finally:
            with anyio.CancelScope(shield=True):
                for log in [*self._live.values(), *self._retry]:
                    await self.flush(log, close=True)

    async def flush(self, log: JobLog, *, close: bool = False) -> None:
        """Write the entries not yet in the file (small batches on the loop, see the module
        docstring); never raises. A failed write ends the log (see `abort`); `close` also
        closes its file."""
        file = self._files[log]
        async with file.lock:
            batch = log.unwritten()
            if batch:
                try:
                    file.size += await self._write(file, batch)
                except Exception as exc:  # any failure to write is this job's
                    await self._write_failed(log, file, exc)
                else:
                    log.advance(batch[-1].seq, self.memory_tail)
                    self._retry.pop(log, None)
                    self.last_error = None
            if file.fd is not None and (close or log.is_ended):
                await anyio.to_thread.run_sync(_close, file)

    async def _write(self, file: LogFile, batch: list[LogEntry]) -> int:
        """Append `batch` to the log's file, inline or in a thread; returns its bytes (the
        caller counts them in `file.size` on the loop, as readers see them)."""
        data = "".join([entry.jsonl() for entry in batch]).encode()
        if len(data) > INLINE_WRITE_BYTES or time.monotonic() < self._threaded_until:
            return await anyio.to_thread.run_sync(_write, file, batch, data)
        start = time.monotonic()
        try:
            return _write(file, batch, data)
        finally:
            if time.monotonic() - start > SLOW_WRITE_S:
                self._threaded_until = time.monotonic() + SLOW_BACKOFF_S

    async def _write_failed(self, log: JobLog, file: LogFile, exc: BaseException) -> None:
        error = storage_error(self.folder, exc)
        self.last_error = error
        self._retry[log] = None
        if log.aborted is not None:
            return  # its final event is still waiting for room; the next tick retries
        final = log.abort(error)
        with contextlib.suppress(Exception):  # no room even for that: retried every tick
            file.size += await self._write(file, [final])
            log.advance(final.seq, self.memory_tail)
            self._retry.pop(log, None)
        if self.on_abort is not None:
            self.on_abort(log, error)

    async def finish(self, log: JobLog) -> None:
        """Flush a closed log completely and keep it in memory only for a while."""
        await self.flush(log, close=True)
        log.trim(self.memory_tail)
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

    async def storage_problem(self) -> StorageError | None:
        """Why this store cannot take new jobs now (disk full, failing writes), else None."""
        problem = check_room(self.folder.parent)
        if problem is not None or self.last_error is None:
            return problem
        try:  # a write failed and nothing has written since: see whether writes work now
            await anyio.to_thread.run_sync(storage.probe, self.folder)
        except OSError as exc:
            return storage_error(self.folder, exc)
        self.last_error = None
        return None

    async def recover(self, job_id: str, data: dict[str, Any]) -> tuple[JobState, str | None]:
        """End the log of a job a crash left running: keep a final state the log already
        has, else append `failed` with `data` after the last whole line; returns the final."""
        return await anyio.to_thread.run_sync(_recover, self.path(job_id), data)

    async def delete(self, job_ids: list[str]) -> None:
        """Forget logs pruned by retention."""
        for job_id in job_ids:
            self._finished.pop(job_id, None)
        paths = [self.path(job_id) for job_id in job_ids]
        await anyio.to_thread.run_sync(_unlink_all, paths)


def _make_folder(folder: Path) -> None:
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _open(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)


def _write(file: LogFile, batch: list[LogEntry], data: bytes) -> int:
    """Append `data` (`batch` as JSONL) in one write, with room for a final event after it;
    on any error the file is cut back to what it held before, so it never holds half a batch."""
    if file.fd is None:
        file.path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        file.fd = _open(file.path)
        file.size = os.fstat(file.fd).st_size
    ends = batch[-1].kind == "state" and is_final(batch[-1].to_event().data.get("state", ""))
    try:
        storage.reserve(file.fd, file.size, len(data) + (0 if ends else storage.FINAL_SLACK))
        view = memoryview(data)
        while view:
            view = view[os.write(file.fd, view) :]
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(file.fd, file.size)
        raise
    return len(data)


def _close(file: LogFile) -> None:
    fd, file.fd = file.fd, None
    if fd is not None:
        storage.release(fd, file.size, storage.FINAL_SLACK)
        os.close(fd)


def _recover(path: Path, data: dict[str, Any]) -> tuple[JobState, str | None]:
    path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        end, last = _last_entry(fd)
        os.ftruncate(fd, end)  # a torn line a kill left behind was never sent: drop it
        if last is not None and last.kind == "state":
            event = last.to_event()
            if event.is_final:
                return event.data["state"], event.data.get("error")
        entry = LogEntry.encode((last.seq if last else 0) + 1, "state", {**data, "state": "failed"})
        os.pwrite(fd, entry.jsonl().encode(), end)
        return "failed", data.get("error")
    finally:
        os.close(fd)


def _last_entry(fd: int) -> tuple[int, LogEntry | None]:
    """(bytes up to the end of the last whole line, the last entry in the file), read
    backwards so a long log costs a chunk or two."""
    pos, end = os.fstat(fd).st_size, 0
    while pos > 0:
        step = min(READ_CHUNK, pos)
        pos -= step
        cut = os.pread(fd, step, pos).rfind(b"\n")
        if cut >= 0:
            end = pos + cut + 1
            break
    pos, carry = end, b""
    while pos > 0:
        step = min(READ_CHUNK, pos)
        pos -= step
        lines = (os.pread(fd, step, pos) + carry).split(b"\n")
        carry = lines[0] + b"\n" if pos > 0 else b""  # maybe half a line: finish it next step
        for line in reversed(lines[1 if pos > 0 else 0 : -1]):
            entry = parse_jsonl(line.decode("utf-8", "replace"))
            if entry is not None:
                return end, entry
    return end, None
