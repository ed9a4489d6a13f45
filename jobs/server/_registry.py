"""The job table: every job's operation, state and state history, in SQLite.

States move `queued` -> `running` -> `completed | failed | cancelled`; every transition is
stored with its time. SQLite (WAL) lives in the state folder, so a restarted server still
knows every job. Calls run in a worker thread (`anyio.to_thread`) because a commit can
wait on the disk; one lock serialises them on the single connection.

Invariant: a job row is `queued` or `running` only while the process that created it is
alive. `open()` lists any such row a crash left in `recovered`; the service ends each one
(`failed` with CRASH_REASON, or the final state its log already holds) before serving.

A write the disk refuses (full, I/O error) raises StorageError. The database file is the
owner's only (0600; SQLite gives its -wal and -shm files the same mode).
"""

from __future__ import annotations

import builtins  # the class defines list(); annotations inside it need the builtin
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio.to_thread

from jobs import FINAL_STATES, JobNotFound, JobState, StateFolderBusy, storage_error
from narration_core import redact

CRASH_REASON = "the server stopped while the job was running (crash or kill)"
FILE_MODE = 0o600  # the job table holds every job's parameters: the owner's only
FOLDER_MODE = 0o700
SQLITE_STORAGE_CODES = frozenset({10, 13})  # SQLITE_IOERR, SQLITE_FULL (primary codes)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    error TEXT,
    trace_id TEXT,
    parent_job TEXT
);
CREATE TABLE IF NOT EXISTS transitions (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_job ON transitions(job_id);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
"""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Transition:
    state: JobState
    at: float


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as the table knows it; `transitions` is filled only by `get`."""

    id: str
    operation: dict[str, Any]
    state: JobState
    created_at: float
    updated_at: float
    error: str | None = None
    transitions: tuple[Transition, ...] = field(default=())
    trace_id: str | None = None  # the user request it served (jobs._trace)
    parent_job: str | None = None  # the upstream job that asked for it

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "job_id": self.id,
            "operation": self.operation.get("operation"),
            "params": self.operation,
            "state": self.state,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "error": self.error,
            "trace_id": self.trace_id,
            "parent_job": self.parent_job,
        }
        if self.transitions:
            d["transitions"] = [{"state": t.state, "at": t.at} for t in self.transitions]
        return d


class JobRegistry:
    """The SQLite job table. Open with `await JobRegistry.open(path)`; close with `aclose()`."""

    def __init__(
        self, conn: sqlite3.Connection, recovered: list[JobRecord], folder: Path | None = None
    ) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._folder = folder or Path(".")
        self.recovered = recovered  # jobs a crash left queued or running (still so here)

    @classmethod
    async def open(cls, path: Path) -> JobRegistry:
        return await anyio.to_thread.run_sync(cls._open_sync, path)

    @classmethod
    def _open_sync(cls, path: Path) -> JobRegistry:
        path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process crash
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        _add_trace_columns(conn)
        stale = conn.execute("SELECT id FROM jobs WHERE state IN ('queued', 'running')").fetchall()
        registry = cls(conn, [], path.parent)
        registry.recovered = [registry._get_sync(job_id) for (job_id,) in stale]
        return registry

    @classmethod
    def in_memory(cls) -> JobRegistry:
        """A job table kept in memory only (a worker's: another server keeps the record);
        nothing to recover, gone when the process ends."""
        conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        return cls(conn, [])

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args)

        try:
            return await anyio.to_thread.run_sync(locked)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in SQLITE_STORAGE_CODES:
                raise storage_error(self._folder, exc) from exc
            raise

    async def create(
        self,
        job_id: str,
        operation: dict[str, Any],
        *,
        trace_id: str | None = None,
        parent_job: str | None = None,
    ) -> JobRecord:
        """Record a new job, with the trace it serves and the job that asked for it. Its
        operation is kept for showing only (the handler runs the parsed one), so
        credentials in it (a URL's `user:pass@`, `?key=`) are redacted before it is
        stored or listed, as narration and errors are."""
        return await self._call(
            self._create_sync, job_id, redacted(operation), trace_id, parent_job
        )

    def _create_sync(
        self,
        job_id: str,
        operation: dict[str, Any],
        trace_id: str | None,
        parent_job: str | None,
    ) -> JobRecord:
        now = time.time()
        with self._conn:
            self._conn.execute(
                "INSERT INTO jobs (id, operation, state, created_at, updated_at, trace_id,"
                " parent_job) VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                (job_id, json.dumps(operation), now, now, trace_id, parent_job),
            )
            self._conn.execute(
                "INSERT INTO transitions (job_id, state, at) VALUES (?, 'queued', ?)",
                (job_id, now),
            )
        return JobRecord(
            job_id, operation, "queued", now, now, trace_id=trace_id, parent_job=parent_job
        )

    async def transition(self, job_id: str, state: JobState, error: str | None = None) -> None:
        """Record that `job_id` entered `state` now (with the error text for `failed`)."""
        await self._call(self._transition_sync, job_id, state, error)

    def _transition_sync(self, job_id: str, state: JobState, error: str | None) -> None:
        with self._conn:
            _set_state(self._conn, job_id, state, time.time(), error)

    async def get(self, job_id: str) -> JobRecord:
        """The job with its transitions; raises JobNotFound."""
        return await self._call(self._get_sync, job_id)

    def _get_sync(self, job_id: str) -> JobRecord:
        row = self._conn.execute(
            "SELECT id, operation, state, created_at, updated_at, error, trace_id, parent_job"
            " FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        steps = self._conn.execute(
            "SELECT state, at FROM transitions WHERE job_id = ? ORDER BY rowid", (job_id,)
        ).fetchall()
        return _record(row, tuple(Transition(s, at) for s, at in steps))

    async def list(self, *, limit: int = 100) -> builtins.list[JobRecord]:
        """The newest `limit` jobs, newest first."""
        return await self._call(self._list_sync, limit)

    def _list_sync(self, limit: int) -> builtins.list[JobRecord]:
        rows = self._conn.execute(
            "SELECT id, operation, state, created_at, updated_at, error, trace_id, parent_job"
            " FROM jobs"
            " ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [_record(row, ()) for row in rows]

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        rows = await self._call(
            lambda: self._conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        )
        return {state: n for state, n in rows}

    async def prune(self, *, max_age_s: float | None, max_jobs: int | None) -> builtins.list[str]:
        """Delete finished jobs older than `max_age_s` or beyond the newest `max_jobs`;
        returns their ids so their logs can go too."""
        return await self._call(self._prune_sync, max_age_s, max_jobs)

    def _prune_sync(self, max_age_s: float | None, max_jobs: int | None) -> builtins.list[str]:
        doomed: set[str] = set()
        final = "state IN ('completed', 'failed', 'cancelled')"
        if max_age_s is not None:
            cutoff = time.time() - max_age_s
            rows = self._conn.execute(
                f"SELECT id FROM jobs WHERE {final} AND updated_at < ?", (cutoff,)
            ).fetchall()
            doomed.update(r[0] for r in rows)
        if max_jobs is not None:
            rows = self._conn.execute(
                f"SELECT id FROM jobs WHERE {final} ORDER BY created_at DESC, rowid DESC"
                " LIMIT -1 OFFSET ?",
                (max_jobs,),
            ).fetchall()
            doomed.update(r[0] for r in rows)
        if doomed:
            with self._conn:
                self._conn.executemany("DELETE FROM jobs WHERE id = ?", [(j,) for j in doomed])
        return sorted(doomed)

    async def aclose(self) -> None:
        await self._call(self._conn.close)


def _set_state(
    conn: sqlite3.Connection, job_id: str, state: str, at: float, error: str | None
) -> None:
    # Invariant: a final state is final; a late transition (a cancel racing the end)
    # changes nothing and records nothing.
    changed = conn.execute(
        "UPDATE jobs SET state = ?, updated_at = ?, error = COALESCE(?, error)"
        " WHERE id = ? AND state NOT IN ('completed', 'failed', 'cancelled')",
        (state, at, error, job_id),
    ).rowcount
    if changed:
        conn.execute(
            "INSERT INTO transitions (job_id, state, at) VALUES (?, ?, ?)", (job_id, state, at)
        )


def lock_state_folder(folder: Path) -> IO[bytes]:
    """Hold an exclusive lock on `folder` for this process's life; returns the open lock file.

    Two servers on one state folder would each take the other's running jobs for
    crashed ones. Raises StateFolderBusy when another process holds the lock.
    """
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    handle = os.fdopen(
        os.open(folder / "server.lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE), "wb"
    )
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StateFolderBusy(folder) from None
    return handle


def redacted(value: Any) -> Any:
    """`value` with every string in it redacted (narration_core.redact), at any depth."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redacted(item) for item in value]
    return value


def _add_trace_columns(conn: sqlite3.Connection) -> None:
    """A job table from before traces gains their columns (older rows keep NULL)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    for column in ("trace_id", "parent_job"):
        if column not in have:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")


def _record(row: tuple[Any, ...], transitions: tuple[Transition, ...]) -> JobRecord:
    job_id, operation, state, created_at, updated_at, error, trace_id, parent_job = row
    try:
        params = json.loads(operation)
    except (TypeError, ValueError):  # a damaged row is still listed: one bad row, no 500
        params = None
    return JobRecord(
        job_id,
        params if isinstance(params, dict) else {},
        state,
        created_at,
        updated_at,
        error,
        transitions,
        trace_id,
        parent_job,
    )
