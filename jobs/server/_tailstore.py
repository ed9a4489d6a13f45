"""An event store that writes nothing: each log keeps a bounded tail in memory.

For a server whose events another one keeps: a worker's jobs are followed by the queen,
whose own log records every relayed event, and the hive removes the worker's state folder
when it exits. So a token costs no disk write here. An event counts as written as soon as
the flusher sees it (readers are woken the same way as for `EventStore`), a log keeps
about `memory_tail` events, and a reader that falls behind that tail goes on from the
oldest event still held (_logreaders.py). A log that has left memory reads as ended, its
final state taken from the job table.
"""

from __future__ import annotations

from typing import ClassVar

from jobs import StorageError
from jobs.server._eventlog import EventStore
from jobs.server._joblog import JobLog


class TailStore(EventStore):
    """Every job's log in memory only (a bounded tail each); `folder` is never written."""

    writes_files: ClassVar[bool] = False

    async def flush(self, log: JobLog, *, close: bool = False) -> None:
        """Let readers see the new events; drop those past the tail."""
        batch = log.unwritten()
        if batch:
            log.advance(batch[-1].seq, self.memory_tail)

    async def storage_problem(self) -> StorageError | None:
        return None  # nothing is written, so no disk can refuse it

    async def delete(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self._finished.pop(job_id, None)
