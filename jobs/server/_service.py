"""The job service: creates jobs, runs each under its handler, and owns their tasks.

A job runs as soon as it is created, inside `narration_context(job_id=...)`, as a task
in the service's task group (entered with `async with service.running()`, e.g. from an
ASGI lifespan). Its log is a view the SSE route reads; nothing waits for a subscriber.
Handlers are `async def handler(operation, job) -> result`, chosen by operation name from
the router the program passes in; an operation without a handler fails its job with
OperationUnavailable, so nothing succeeds silently.

Failures stay inside the job they hit: a storage error (disk full) while writing a job's
log or its row fails that job and no other (`store.on_abort`), the bookkeeping that ends
a job (`_finish`) never raises into the task group, and a final state the job table could
not take is kept and retried. New jobs are refused (507) while the disk is full and run
again once it has room, but for those that only read or free space (model list and delete,
status): the way out of a full disk must not be behind it. `problem()` is what /health
reports.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import anyio
import anyio.abc

from jobs import (
    JobError,
    JobFinished,
    JobState,
    Operation,
    OperationUnavailable,
    ServiceUnavailable,
    StorageError,
    current_parent_job,
    new_trace_id,
    operation_json,
    otel_enabled,
)
from jobs.server._eventlog import FLUSH_INTERVAL_S, EventStore
from jobs.server._joblog import JobLog
from jobs.server._logreaders import LogReader
from jobs.server._registry import CRASH_REASON, JobRecord, JobRegistry
from jobs.server._storage import DiskGate
from jobs.server._tailstore import TailStore
from jobs.server._tracing import export_job
from narration_core import (
    NarrationEvent,
    Narrator,
    current_job_id,
    current_trace_id,
    narration_context,
    register_job_sink,
)

Handler = Callable[[Any, "Job"], Awaitable[Any]]  # Any: each handler takes its own model
# A program whose handlers read the service itself (the queen's status) passes a factory.
HandlerFactory = Callable[["JobService"], Mapping[str, Handler]]

PRUNE_INTERVAL_S = 600.0  # how often retention runs while serving
CANCEL_WAIT_S = 5.0  # how long cancel_all waits for jobs to reach a final state
RECORD_RETRY_S = 1.0  # how often a final state the job table refused is tried again

LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Retention:
    """Which finished jobs (row and log) to keep: newer than `max_age_s`, at most `max_jobs`."""

    max_age_s: float | None = 7 * 24 * 3600.0
    max_jobs: int | None = 1000


@dataclass(frozen=True, slots=True)
class Upstream:
    """Marks a handler that contacts another daemon first: `POST /v1/jobs` waits until it
    calls `job.mark_ready()`, so an unreachable upstream can still answer 502."""

    fn: Handler

    async def __call__(self, operation: Any, job: Job) -> Any:
        return await self.fn(operation, job)


@dataclass(eq=False)
class Job:
    """A running job as its handler sees it: emit events, mark readiness."""

    id: str
    operation: Operation
    log: JobLog
    state: JobState = "queued"
    error: BaseException | None = None
    ready: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)
    cancel_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    trace_id: str | None = None  # the user request this job serves (jobs._trace)
    parent_job: str | None = None  # the upstream job that asked for this one, if any

    def token(self, text: str, index: int, extra: dict[str, Any] | None = None) -> int:
        """Append an inference token event `{"t", "i", **extra}` (extra: a choice index
        `c`, logprobs `lp`, see docs/api.md); returns its seq."""
        data: dict[str, Any] = {"t": text, "i": index}
        if extra:
            data.update(extra)
        return self.log.append("token", data)

    def mark_ready(self) -> None:
        """Tell a waiting `POST /v1/jobs` that the upstream accepted the work."""
        self.ready.set()

    def _sink(self, event: NarrationEvent) -> None:
        self.log.append("output" if event.stream is not None else "narration", event.to_dict())


class JobService:
    """Jobs of one server: registry, event logs and the tasks that run them.

    Durable by default: the job table in SQLite and every event in a JSONL file before a
    reader sees it, so a restart recovers. `durable=False` keeps both in memory (a table
    in an in-memory SQLite, a bounded tail of each log: `TailStore`), for a server whose
    jobs another server records as it follows them (the worker under the queen).
    """

    def __init__(
        self,
        state_dir: Path,
        handlers: Mapping[str, Handler] | HandlerFactory,
        *,
        actor: str,
        flush_interval_s: float | None = None,
        retention: Retention | None = None,
        durable: bool = True,
    ) -> None:
        self.state_dir = state_dir
        self.retention = retention or Retention()
        self.durable = durable
        self.store = (EventStore if durable else TailStore)(
            state_dir / "joblogs",
            flush_interval_s=flush_interval_s or FLUSH_INTERVAL_S,
            on_abort=self._storage_failed,
        )
        self.started_at = time.time()
        self.actor, self._narrate = actor, Narrator(actor)
        self._registry: JobRegistry | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._jobs: dict[str, Job] = {}
        # Final states the job table refused (disk full), retried until it takes them.
        self._unrecorded: dict[str, tuple[JobState, str | None]] = {}
        self.open_streams: set[Any] = set()  # SSE responses being served (see statistics())
        self.handlers = dict(handlers(self) if callable(handlers) else handlers)
        self.disk = DiskGate(self.store.storage_problem, state_dir if durable else None, actor)

    @property
    def is_running(self) -> bool:
        """True between entering and leaving `running()`: jobs can be submitted."""
        return self._tg is not None

    @property
    def registry(self) -> JobRegistry:
        if self._registry is None:
            raise ServiceUnavailable()
        return self._registry

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobService]:
        """Open the registry, recover crashed jobs, serve; on exit cancel and record every
        running job, flush every log and close the registry."""
        if self.durable:
            self._registry = await JobRegistry.open(self.state_dir / "jobs.sqlite3")
        else:
            self._registry = JobRegistry.in_memory()
        try:
            await self._recover(self._registry.recovered)
            async with anyio.create_task_group() as tg:
                await tg.start(self.store.run)
                tg.start_soon(self._prune_forever)
                tg.start_soon(self._record_forever)
                self._tg = tg
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.cancel_all()
                    self._tg = None
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._registry.aclose()
            self._registry = None

    async def _recover(self, records: list[JobRecord]) -> None:
        """End the jobs a crash left running: the log's own final state if it has one (a
        job whose row could not be updated), else `failed` stamped with the recovery time,
        with a seq past every event that was ever sent (readers only see written events)."""
        for record in records:
            data = {"ts": time.time(), "error": CRASH_REASON, "recovered": True}
            try:
                state, error = await self.store.recover(record.id, data)
            except OSError as exc:
                LOG.warning("cannot end the log of job %s after a crash: %s", record.id, exc)
                state, error = "failed", CRASH_REASON
            await self._record(record.id, state, error)

    async def problem(self) -> JobError | None:
        """Why this service cannot run jobs now (not running, disk full), else None."""
        if self._tg is None:
            return ServiceUnavailable()
        return await self.disk.problem()

    async def submit(self, operation: Operation) -> Job:
        """Create the job and start running it now; returns once it is recorded. Raises
        ServiceUnavailable, or StorageError while the disk is full (see DiskGate)."""
        if self._tg is None:
            raise ServiceUnavailable()
        await self.disk.admit(operation)
        job_id = f"job-{secrets.token_hex(8)}"
        trace = _request_trace()
        await self.registry.create(job_id, operation_json(operation), **trace)
        job = Job(job_id, operation, self.store.create(job_id), **trace)
        self._jobs[job_id] = job
        unregister = register_job_sink(job_id, job._sink)
        self._tg.start_soon(self._run, job, unregister, name=f"job {job_id}")
        return job

    def statistics(self) -> dict[str, int]:
        """Running jobs and open SSE streams, for tests and the status page."""
        return {"running_jobs": len(self._jobs), "open_streams": len(self.open_streams)}

    def live(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def _run(self, job: Job, unregister: Callable[[], None]) -> None:
        state: JobState = "failed"
        result: Any = None
        try:
            with job.cancel_scope:
                await self._enter(job, "running")
                async with narration_context(job_id=job.id, trace_id=job.trace_id):
                    name = job.operation.operation
                    self._narrate.action("job_start").target(name).human(
                        f"Running {name} as job {job.id}"
                    ).emit()
                    handler = self.handlers.get(name)
                    if handler is None:
                        raise OperationUnavailable(name, available=sorted(self.handlers))
                    if not isinstance(handler, Upstream):
                        job.mark_ready()
                    result = await handler(job.operation, job)
                    state = "completed"
            if job.cancel_scope.cancelled_caught:
                state = "cancelled" if job.error is None else "failed"  # see _storage_failed
        except anyio.get_cancelled_exc_class():
            state = "cancelled"
            raise
        except Exception as exc:
            job.error = _root_cause(exc)
            self._narrate.action("job_failed").human(str(job.error)).level("error").job_id(
                job.id
            ).emit()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._finish(job, state, result)
                finally:
                    unregister()

    def _storage_failed(self, log: JobLog, error: StorageError) -> None:
        """The store could not write this job's log and ended it `failed`: stop the job."""
        self._narrate.action("storage_error").target(log.job_id).human(
            f"Job {log.job_id} failed: {error}"
        ).level("error").emit()
        job = self._jobs.get(log.job_id)
        if job is not None and job.error is None:
            job.error = error
            job.cancel_scope.cancel()

    async def _enter(self, job: Job, state: JobState) -> None:
        job.state = state
        job.log.append("state", {"state": state, "ts": time.time()})
        await self.registry.transition(job.id, state)

    async def _finish(self, job: Job, state: JobState, result: Any) -> None:
        """End the log, write it out, record the log's final state; never raises (one
        job's bookkeeping must not take the task group, and every other job, down)."""
        try:
            error = None if job.error is None else (str(job.error) or repr(job.error))
            if state == "cancelled":
                self._narrate.action("job_cancelled").human(f"Job {job.id} cancelled").job_id(
                    job.id
                ).emit()
            data: dict[str, Any] = {"state": state, "ts": time.time()}
            if error is not None:
                data["error"] = error
            if result is not None:
                data["result"] = result
            try:
                job.log.close(state, data)  # a no-op when the store already ended it (disk full)
            except Exception as exc:  # e.g. a result JSON cannot hold (non-string keys)
                reason = f"the job ended but its result could not be saved ({exc})"
                job.log.close("failed", {"state": "failed", "ts": data["ts"], "error": reason})
            await self.store.finish(job.log)
            state, error = job.log.final or (state, error)  # the log is the truth
            job.state = state
            await self._record(job.id, state, error)
            if otel_enabled() and self._tg is not None:
                self._tg.start_soon(export_job, self, job.id, name=f"export {job.id}")
        except Exception:
            LOG.exception("ending job %s failed; its final state may be unrecorded", job.id)
            job.state = state
        finally:
            self._jobs.pop(job.id, None)
            job.ready.set()
            job.finished.set()

    async def _record(self, job_id: str, state: JobState, error: str | None) -> None:
        """Put a final state into the job table, or keep it for `_record_forever`."""
        try:
            await self.registry.transition(job_id, state, error)
        except Exception as exc:  # disk full, I/O error: retried later
            LOG.warning("job %s: cannot record %s yet (%s); retrying", job_id, state, exc)
            self._unrecorded[job_id] = (state, error)
        else:
            self._unrecorded.pop(job_id, None)

    async def _record_forever(self) -> None:
        while True:
            await anyio.sleep(RECORD_RETRY_S)
            for job_id, (state, error) in list(self._unrecorded.items()):
                await self._record(job_id, state, error)

    async def cancel(self, job_id: str) -> Job:
        """Ask a running job to stop; raises JobNotFound, or JobFinished if it has ended."""
        job = self._jobs.get(job_id)
        if job is None:
            record = await self.registry.get(job_id)
            raise JobFinished(job_id, record.state)
        job.cancel_scope.cancel()
        return job

    async def cancel_all(self, *, wait_s: float = CANCEL_WAIT_S) -> None:
        """Cancel every running job and wait (bounded) until each has recorded its end."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel_scope.cancel()
        with anyio.move_on_after(wait_s):
            for job in jobs:
                await job.finished.wait()

    async def get(self, job_id: str) -> JobRecord:
        record = await self.registry.get(job_id)
        return _overlay(self._unrecorded, record, self._jobs.get(job_id))

    async def list(self, *, limit: int = 100) -> list[JobRecord]:
        return [
            _overlay(self._unrecorded, record) for record in await self.registry.list(limit=limit)
        ]

    async def reader(self, job_id: str, after: int) -> LogReader:
        """A reader of the job's events after seq `after`; raises JobNotFound."""
        if self.store.memory(job_id) is not None:
            return self.store.reader(job_id, after, None)
        record = await self.get(job_id)
        return self.store.reader(job_id, after, (record.state, record.error))

    async def _prune_forever(self) -> None:
        while True:
            try:
                removed = await self.registry.prune(
                    max_age_s=self.retention.max_age_s, max_jobs=self.retention.max_jobs
                )
                await self.store.delete(removed)
            except Exception as exc:  # retention waits for the next round
                LOG.warning("pruning old jobs failed (%s); trying again later", exc)
            await anyio.sleep(PRUNE_INTERVAL_S)


class _Trace(TypedDict):
    trace_id: str
    parent_job: str | None


def _request_trace() -> _Trace:
    """The trace a new job joins: the request's (set by TraceContext), else its own; and
    its parent: the job submitting it in this process, else the request's calling job."""
    return {
        "trace_id": current_trace_id() or new_trace_id(),
        "parent_job": current_job_id() or current_parent_job(),
    }


def _overlay(
    unrecorded: dict[str, tuple[JobState, str | None]],
    record: JobRecord,
    live: Job | None = None,
) -> JobRecord:
    """The record as the job's log has it, while the table lags behind: a final state the
    table refused (disk full), or the end of a log the table records a moment later (a
    client that read the stream's end asks next)."""
    pending = unrecorded.get(record.id)
    if pending is None and live is not None:
        pending = live.log.final
    if pending is None:
        return record
    return dataclasses.replace(record, state=pending[0], error=pending[1])


def _root_cause(exc: BaseException) -> BaseException:
    """The single error inside nested one-member exception groups (task groups wrap)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
