"""One job's event log: numbered events in memory, written out by `EventStore`.

Appends come from any thread (narration from `anyio.to_thread` work lands here through the
job's narration sink) and never block: they go into memory and wake the store's flusher
(directly on the loop; from another thread with one scheduled call however many appends
come before it runs). Readers see an event only once the store has written it (`written`),
and a log keeps only a bounded tail of written events in memory; older ones are read back
from the store's file (see _logreaders.py). The file itself is the store's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio

from jobs import EventKind, JobState, LogEntry, StorageError
from narration_core import redact

MAX_BATCH = 2048  # events handed to a reader at once (bounds one SSE write to ~1 MB)


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

    def __init__(self, job_id: str, notify: Callable[[JobLog], None]) -> None:
        self.job_id = job_id
        self._entries: list[LogEntry] = []
        self._base = 0
        self._final: tuple[JobState, str | None] | None = None
        self._lock = threading.Lock()
        self._changed: anyio.Event | None = None  # created by the first waiter, set on write
        self._loop_thread = threading.get_ident()
        self._call_soon = _loop_waker()
        self._notify = notify
        self._notify_pending = False
        self.written = 0  # events the store has written (touched on the loop); readers see <= it
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
    def base(self) -> int:
        """The seq before the oldest event still in memory (0 while all are)."""
        return self._base

    @property
    def final(self) -> tuple[JobState, str | None] | None:
        """(state, error) once the final state event is in the log, else None."""
        return self._final

    @property
    def is_ended(self) -> bool:
        """True once the final state event is written: nothing more will come."""
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
        """Append the final `state` event and end the log; later appends are dropped.

        Its `error` is redacted here, once, as narration is: the final state event is what
        the log file, the stream, `GET /v1/jobs/{id}` and the registry all keep.
        """
        error = data.get("error")
        if isinstance(error, str):
            data = {**data, "error": redact(error)}
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
        reason = redact(str(error))
        data = {"state": "failed", "ts": time.time(), "error": reason}
        entry = LogEntry.encode(self.written + 1, "state", data)
        with self._lock:
            del self._entries[self.written - self._base :]
            self._entries.append(entry)
            self._final = ("failed", reason)
        self.aborted = error
        return entry

    def slice(self, after: int, upto: int, limit: int = MAX_BATCH) -> list[LogEntry] | None:
        """Entries with `after` < seq <= `upto`, at most `limit`; None when seq `after + 1`
        has left memory (read the store's file)."""
        with self._lock:
            if after < self._base:
                return None
            start = after - self._base
            return self._entries[start : min(upto - self._base, start + limit)]

    def unwritten(self) -> list[LogEntry]:
        """The entries not written yet (the flusher's next batch)."""
        with self._lock:
            return self._entries[self.written - self._base :]

    def advance(self, seq: int, tail: int) -> None:
        """Record that everything up to `seq` is written; wake readers; keep only about
        `tail` written entries in memory (trimmed in steps, so cheap per write)."""
        self.written = seq
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
        """Return once more than `after` events are written or the log has ended."""
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
