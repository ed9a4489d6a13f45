"""Per-job append-only event logs: on disk before any reader sees them, a bounded tail in memory.

A job's `JobLog` numbers events 1, 2, 3… Appends come from any thread (narration from
`anyio.to_thread` work lands here through the job's narration sink) and never block: they
go into memory and wake the store's flusher (directly on the loop; from another thread
with one scheduled call however many appends come before it runs). The flusher writes each
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
duplicate). Finished logs stay in memory for a while; later readers read the file.

Disk full (see jobs.storage): every batch first reserves its bytes plus FINAL_SLACK past the
end of its file. When a write fails, that job cannot go on: its events not yet written are
dropped (nobody saw them), its `failed` state event goes into the slack kept for it, and
`on_abort` tells the service to stop the job. Other jobs carry on. A final event that still
cannot be written is retried every tick; its readers wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread

from jobs import storage
from jobs.errors import StorageError
from jobs.events import (
    EventKind,
    JobState,
    LogEntry,
    is_final,
    iter_jsonl,
    parse_jsonl,
    terminator,
)

FLUSH_INTERVAL_S = 0.2  # housekeeping tick: evict finished logs, retry refused writes
KEEP_FINISHED = 16  # finished logs kept in memory for late readers, newest first
FINISHED_TTL_S = 60.0  # seconds a finished log stays in memory before readers go to disk
MAX_BATCH = 2048  # events handed to a reader at once (bounds one SSE write to ~1 MB)
MEMORY_TAIL = 1024  # written events a log keeps in memory (~1 KB each); older ones: the file
READ_CHUNK = 256 * 1024  # bytes read from a JSONL file per step
INLINE_WRITE_BYTES = 256 * 1024  # batches up to this are written on the loop (~5-50 µs each)
SLOW_WRITE_S = 0.005  # an inline write slower than this means the disk is slow right now...
SLOW_BACKOFF_S = 1.0  # ...so every write goes to a thread for this long, then inline is retried
FILE_MODE = 0o600  # logs hold job output: the owner's only
FOLDER_MODE = 0o700

AbortHandler = Callable[["JobLog", StorageError], None]


def _loop_waker() -> Callable[[Callable[[], None]], Any]:
    """A non-blocking "run this on the event loop soon" for other threads.

    anyio's `from_thread.run_sync` waits for the result, and a narration sink must never
    block, so use the loop's own thread-safe scheduler. rbee runs anyio on asyncio
    (asyncssh needs it), so that is the only backend served here.
    """
    return asyncio.get_running_loop().call_soon_threadsafe


class JobLog:
    """One job's events. Create on the event loop (via `EventStore.create`).

    Seq n sits at `_entries[n - 1 - _base]`; `_base` events (all written) have left memory.
    """

    def __init__(self, job_id: str, path: Path, notify: Callable[[JobLog], None]) -> None:
        self.job_id = job_id
        self.path = path
        self._entries: list[LogEntry] = []
        self._base = 0
        self._final: tuple[JobState, str | None] | None = None
        self._lock = threading.Lock()
        self._changed: anyio.Event | None = None  # created by the first waiter, set on write
        self._loop_thread = threading.get_ident()
        self._call_soon = _loop_waker()
        self._notify = notify
        self._notify_pending = False
        # Flusher state, touched only on the loop (the file itself under `flush_lock`).
        self.flush_lock = anyio.Lock(fast_acquire=True)  # no loop pass when it is free
        self.written = 0  # events in the file; readers see seq <= written
        self.size = 0  # bytes of the file that hold them
        self.fd: int | None = None
        self.aborted: StorageError | None = None  # why the store ended this log early
        # Streams reading it now, and since when none has (monotonic): a job that runs until
        # cancelled can end itself once nobody has read it for a while (a crashed client).
        self.readers = 0
        self.unread_since = time.monotonic()

    def unread_for(self) -> float:
        """Seconds since the last reader left (or the log began), 0.0 while one reads."""
        return 0.0 if self.readers else time.monotonic() - self.unread_since

    def __len__(self) -> int:
        """Events logged so far (in memory or not)."""
        return self._base + len(self._entries)

    @property
    def in_memory(self) -> int:
        """Events held in memory now (bounded by the store's tail while they are written)."""
        return len(self._entries)

    @property
    def final(self) -> tuple[JobState, str | None] | None:
        """(state, error) once the final state event is in the log, else None."""
        return self._final

    @property
    def is_ended(self) -> bool:
        """True once the final state event is in the file: nothing more will come."""
        return self._final is not None and self.written == len(self)

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
            seq = self._base + len(self._entries)
            for entry in entries:
                seq += 1
                entry.seq = seq
            self._entries.extend(entries)
        self._wake_flusher()
        return seq

    def close(self, state: JobState, data: dict[str, Any]) -> int:
        """Append the final `state` event and end the log; later appends are dropped."""
        return self._append("state", data, (state, data.get("error")))

    def _append(self, kind: EventKind, data: Any, final: tuple[JobState, str | None] | None) -> int:
        encoded = LogEntry.encode(0, kind, data)  # encode outside the lock
        with self._lock:
            if self._final is not None:
                return 0
            encoded.seq = seq = self._base + len(self._entries) + 1
            self._entries.append(encoded)
            if final is not None:
                self._final = final
        self._wake_flusher()
        return seq

    def abort(self, error: StorageError) -> LogEntry:
        """End the log with `failed` because its events cannot be written: the unwritten
        ones (no reader saw them) are dropped, so the final event is `written + 1`."""
        data = {"state": "failed", "ts": time.time(), "error": str(error)}
        entry = LogEntry.encode(self.written + 1, "state", data)
        with self._lock:
            del self._entries[self.written - self._base :]
            self._entries.append(entry)
            self._final = ("failed", str(error))
        self.aborted = error
        return entry

    def slice(self, after: int, upto: int, limit: int = MAX_BATCH) -> list[LogEntry] | None:
        """Entries with `after` < seq <= `upto`, at most `limit`; None when seq `after + 1`
        has left memory (read the file)."""
        with self._lock:
            if after < self._base:
                return None
            start = after - self._base
            return self._entries[start : min(upto - self._base, start + limit)]

    def unwritten(self) -> list[LogEntry]:
        """The entries the file does not have yet (the flusher's next batch)."""
        with self._lock:
            return self._entries[self.written - self._base :]

    def advance(self, seq: int, nbytes: int, tail: int) -> None:
        """Record that the file now holds everything up to `seq`; wake readers; keep only
        about `tail` written entries in memory (trimmed in steps, so cheap per write)."""
        self.written = seq
        self.size += nbytes
        with self._lock:
            held = self.written - self._base
            if held > 2 * tail:
                drop = held - tail
                del self._entries[:drop]
                self._base += drop
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    def trim(self, tail: int) -> None:
        """Keep at most `tail` written entries (a finished log waiting for late readers)."""
        with self._lock:
            drop = max(0, self.written - self._base - tail)
            del self._entries[:drop]
            self._base += drop

    async def wait(self, after: int) -> None:
        """Return once the file holds more than `after` events or the log has ended."""
        while self.written <= after and not self.is_ended:
            event = self._changed
            if event is None:
                event = self._changed = anyio.Event()
            await event.wait()

    def _wake_flusher(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._notify(self)
            return
        with self._lock:
            if self._notify_pending:  # one scheduled wake covers every append before it runs
                return
            self._notify_pending = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to wake
            self._call_soon(self._notify_on_loop)

    def _notify_on_loop(self) -> None:
        self._notify_pending = False
        self._notify(self)


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
    """Reads a live (or recently finished) log: memory for the tail, the file behind it."""

    def __init__(self, log: JobLog, after: int) -> None:
        self._log = log
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
        if batch is None:  # fell behind the memory tail: the file has these
            if self._cursor is None:
                self._cursor = JsonlCursor(log.path)
            batch = await anyio.to_thread.run_sync(self._cursor.read, self._pos, log.size)
            batch = [entry for entry in batch if entry.seq <= upto]
            if not batch:  # the file is gone (retention): carry on from memory
                batch = log.slice(self._pos, upto) or []
        if batch:
            self._pos = batch[-1].seq
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


class EventStore:
    """Every job's log: live ones in memory, all of them as JSONL files in `folder`."""

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

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.jsonl"

    def create(self, job_id: str) -> JobLog:
        """A new, empty log for `job_id`; call on the event loop."""
        log = JobLog(job_id, self.path(job_id), self._mark_dirty)
        self._live[job_id] = log
        return log

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
            return MemoryReader(log, after)
        state, error = final or ("failed", "the job's log is gone")
        return FileReader(self.path(job_id), after, state, error)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Write new events as they arrive, retry refused writes and evict old finished logs
        every tick, until cancelled; flushes everything once more on the way out."""
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
        async with log.flush_lock:
            batch = log.unwritten()
            if batch:
                try:
                    nbytes = await self._write(log, batch)
                except Exception as exc:  # any failure to write is this job's
                    await self._write_failed(log, exc)
                else:
                    log.advance(batch[-1].seq, nbytes, self.memory_tail)
                    self._retry.pop(log, None)
                    self.last_error = None
            if log.fd is not None and (close or log.is_ended):
                await anyio.to_thread.run_sync(_close, log)

    async def _write(self, log: JobLog, batch: list[LogEntry]) -> int:
        """Append `batch` to the log's file, inline or in a thread; returns its bytes."""
        data = "".join([entry.jsonl() for entry in batch]).encode()
        if len(data) > INLINE_WRITE_BYTES or time.monotonic() < self._threaded_until:
            return await anyio.to_thread.run_sync(_write, log, batch, data)
        start = time.monotonic()
        try:
            return _write(log, batch, data)
        finally:
            if time.monotonic() - start > SLOW_WRITE_S:
                self._threaded_until = time.monotonic() + SLOW_BACKOFF_S

    async def _write_failed(self, log: JobLog, exc: BaseException) -> None:
        error = storage.storage_error(self.folder, exc)
        self.last_error = error
        self._retry[log] = None
        if log.aborted is not None:
            return  # its final event is still waiting for room; the next tick retries
        final = log.abort(error)
        with contextlib.suppress(Exception):  # no room even for that: retried every tick
            nbytes = await self._write(log, [final])
            log.advance(final.seq, nbytes, self.memory_tail)
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
        problem = storage.check_room(self.folder.parent)
        if problem is not None or self.last_error is None:
            return problem
        try:  # a write failed and nothing has written since: see whether writes work now
            await anyio.to_thread.run_sync(storage.probe, self.folder)
        except OSError as exc:
            return storage.storage_error(self.folder, exc)
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


def _write(log: JobLog, batch: list[LogEntry], data: bytes) -> int:
    """Append `data` (`batch` as JSONL) in one write, with room for a final event after it;
    on any error the file is cut back to what it held before, so it never holds half a batch."""
    if log.fd is None:
        log.path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        log.fd = _open(log.path)
        log.size = os.fstat(log.fd).st_size
    ends = batch[-1].kind == "state" and is_final(batch[-1].to_event().data.get("state", ""))
    try:
        storage.reserve(log.fd, log.size, len(data) + (0 if ends else storage.FINAL_SLACK))
        view = memoryview(data)
        while view:
            view = view[os.write(log.fd, view) :]
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(log.fd, log.size)
        raise
    return len(data)


def _close(log: JobLog) -> None:
    fd, log.fd = log.fd, None
    if fd is not None:
        storage.release(fd, log.size, storage.FINAL_SLACK)
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
