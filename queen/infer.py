"""The queen's `infer`: admit the prompt, pick a worker with the model (or start one),
relay its tokens. This is the face the rest of the queen uses (`WorkerPool`,
`infer_handler`, `catalog_names`); each idea lives in its own module behind it.

    keeper -> queen job (infer) -> [queue] -> POST worker /v1/inference -> tokens

- the workers as this queen knows them, and its requests in flight on each
  (`queen._workers`): the beats, corrected by spawns, stops and deaths it saw itself;
- which worker takes a request, and which hive starts one (`queen._placement`);
- model refs and the catalog ids workers report (`queen._refs`): `builtin:tiny` is `tiny`
  on every hive, learned from each hive's `model_list`;
- admission (`queen._admission`): a request waits in its model's fair, bounded FIFO queue
  while every slot is busy, narrating its place; only a full queue answers 503 with a
  Retry-After (QueueFull);
- provisioning (`queen._provision`): one spawn per model at a time, never a duplicate of
  a worker a hive already runs (a restarted queen asks unheard hives first);
- dispatch (`queen._dispatch`): the prompt to the worker, its job relayed into ours;
- keep_alive (`queen._keepalive`): workers idle longer than keep_alive are stopped;
- placement by memory (`queen._memory`): the hive with the most free memory that fits
  (spread), or the tightest (pack);
- replicas (`queen._replicas`): N workers of a model kept running (`model_serve`), more
  while its queue grows, a dead one replaced.

A worker is free while this queen has fewer requests in flight on it than it has slots
(a request with `n` choices takes n of them, at most all), so the queen never sends it a
request it would have to queue or refuse; one refused anyway (503: still loading) goes
back to the head of the queue.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs import (
    DaemonUnreachable,
    Infer,
    InvalidRequest,
    JobError,
    UpstreamFailed,
    parse_operation,
)
from jobs.server import Handler, Job, Upstream, error_body
from narration_core import Narrator
from queen._admission import MAX_QUEUE, Admission, QueueFull
from queen._dispatch import WorkerBusy, send
from queen._keepalive import KEEP_ALIVE_S, KeepAlive
from queen._memory import Placement
from queen._placement import best, named
from queen._placements_route import Placements
from queen._provision import Provisioner
from queen._refs import ModelRefs, catalog_names
from queen._replicas import REPLICAS_FILE, Replicas, ReplicaStore
from queen._splits import Splits
from queen._workers import USABLE, Pick, WorkerView
from queen.hives import Hive, HiveRegistry
from queen.metrics import QueenMetrics

__all__ = [
    "KEEP_ALIVE_S",
    "MAX_QUEUE",
    "REPLICAS_FILE",
    "USABLE",
    "Pick",
    "QueueFull",
    "QueueGuard",
    "WorkerPool",
    "catalog_names",
    "infer_handler",
]

NARRATE = Narrator("queen-rbee")
JOBS_PATH = "/v1/jobs"  # the job routes' submit (docs/api.md)
UNAVAILABLE_WAIT_S = 60.0  # how long a prompt keeps its turn while its worker answers 503
UNAVAILABLE_RETRY_S = 0.25  # a worker that answered 503 is offered nothing for this long
LOOK_AGAIN_S = 0.25  # a waiting request looks again this often: beats bring slots unannounced


class WorkerPool:
    """Who serves which model, as far as this queen knows, and the queue in front of them;
    event-loop only, no lock."""

    def __init__(
        self,
        hives: HiveRegistry,
        *,
        max_queue: int = MAX_QUEUE,
        keep_alive_s: float | None = KEEP_ALIVE_S,
        metrics: QueenMetrics | None = None,
        placement: Placement = "spread",
        replicas_path: Path | None = None,
    ) -> None:
        self.hives = hives
        self.view = WorkerView(hives)
        self.refs = ModelRefs(hives)
        self.metrics = metrics
        spawned = None if metrics is None else metrics.spawned
        self.splits = Splits(hives)
        self.provisioner = Provisioner(
            hives,
            self.view,
            self.refs,
            spawned=spawned,
            placement=placement,
            placements=Placements(hives),
            splits=self.splits,
        )
        self.admission = Admission(max_queue)
        self.replicas = Replicas(
            self.view,
            self.refs,
            self.provisioner,
            self.admission,
            ReplicaStore(replicas_path),
            spawned=self.admission.notify,
        )
        if metrics is not None:
            metrics.watch_scheduler(self.admission.statistics, self.replicas.table)
        self.keep_alive = (
            None
            if keep_alive_s is None
            else KeepAlive(self.view, keep_alive_s=keep_alive_s, spare=self.replicas.spare)
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Stop workers idle longer than keep_alive and keep the replicas `model_serve`
        asked for while the block runs (the queen's lifespan: `create_app(...,
        lifespan=pool.running)`); both end with it."""
        async with anyio.create_task_group() as tg:
            if self.keep_alive is not None:
                tg.start_soon(self.keep_alive.run)
            tg.start_soon(self.replicas.run)
            tg.start_soon(self.splits.run, self._alive)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    def _alive(self, hive_id: str, worker_id: str) -> bool:
        return any(p.worker.worker_id == worker_id for p in self.view.known(hive_id))

    def known(self, hive_id: str | None = None) -> list[Pick]:
        """Every worker as this queen knows it now, in any state (see WorkerView.known)."""
        return self.view.known(hive_id)

    def loaded(self, hive_id: str | None = None) -> list[Pick]:
        """Every live worker the queen knows of (on `hive_id`, if given)."""
        return self.view.loaded(hive_id)

    def note_spawned(self, hive_id: str, result: dict[str, Any]) -> Pick:
        """Remember a worker a forwarded `worker_spawn` started: it serves before its beat."""
        pick = self.view.note_spawned(hive_id, result)
        self.admission.notify(pick.worker.model)
        return pick

    def note_stopped(self, worker_id: str) -> None:
        """A forwarded `worker_stop` ended this worker: offer it no more prompts."""
        self.view.note_stopped(worker_id)

    def note_deleted(self, hive_id: str, model: str) -> None:
        """A forwarded `model_delete` removed `model` from the hive: forget its catalog id."""
        self.refs.forget(hive_id, model)

    def model_names(self) -> set[str]:
        """The models loaded anywhere, by catalog id, and the refs they were asked for by."""
        names = {p.worker.model for p in self.loaded()}
        return names | self.refs.refs_of(names)

    def serving(self, op: Infer) -> list[Pick]:
        """The live workers that could take `op`: the one it names (InvalidRequest, 404,
        when the queen knows none of that id), else those of its model."""
        picks = self.loaded(op.hive_id)
        if op.worker_id is not None:
            return [named(picks, op.worker_id)]
        return [p for p in picks if self.refs.serves(p.hive_id, p.worker.model, op.model)]

    def find(self, op: Infer) -> Pick | None:
        """The best worker for `op`, free or not, or None when none serves it."""
        return self._best(self.serving(op))

    def free(self, op: Infer) -> Pick | None:
        """The best worker for `op` with a free slot now, or None."""
        return self._best([p for p in self.serving(op) if self.view.has_room(p.worker, slots=op.n)])

    def _best(self, picks: list[Pick]) -> Pick | None:
        stale = {h.id for h in self.hives.all() if h.is_stale()}
        return best(picks, stale=stale, in_flight=lambda p: self.view.in_flight(p.worker))

    def hive_for(self, op: Infer) -> Hive:
        """The hive to start a worker for `op` on (raises InvalidRequest when unclear)."""
        return self.provisioner.hive_for(op)

    async def start_worker(self, op: Infer, job: Job) -> Pick:
        """A worker for `op.model`: one a hive turns out to run, else a new one (narrated);
        one spawn per hive and model at a time, the others wait and take its worker."""
        return await self.provisioner.start_worker(op, job, lambda: self.find(op))

    async def serve(self, op: Infer, job: Job) -> dict[str, Any]:
        """Run `op`: wait for a free slot (in the queue when needed), send it, relay the
        worker's job into `job`; returns the worker job's result. A failure on rbee's
        side is counted by reason (/metrics)."""
        sent: list[Pick] = []  # the workers it was sent to
        try:
            return await self._serve(op, job, sent)
        except Exception as exc:
            reason = failure_reason(exc, sent=bool(sent))
            if reason is not None and self.metrics is not None:
                self.metrics.infer_failed(reason)
            raise

    async def _serve(self, op: Infer, job: Job, sent: list[Pick]) -> dict[str, Any]:
        refused_since: float | None = None
        front = False
        while True:
            pick = await self.admit(op, job, front=front)
            started = time.monotonic()
            try:
                sent.append(pick)
                result = await send(self.view, pick, op, job)
            except WorkerBusy as busy:
                self.view.cool(pick.worker, UNAVAILABLE_RETRY_S)
                refused_since = self._refused(pick, busy, refused_since)
                front = True  # keep its turn: back to the head of the queue
                continue
            finally:
                self.release(op, pick)
            self.admission.record(_queue_key(op), time.monotonic() - started)
            return result

    def full_for(self, body: bytes) -> QueueFull | None:
        """QueueFull when `body` is an `infer` whose queue is full and that no free slot
        would take at once; None otherwise (anything else, or a body the job routes will
        refuse themselves)."""
        try:
            op = parse_operation(body)
        except JobError:
            return None
        if not isinstance(op, Infer) or (op.worker_id is None and self.find(op) is None):
            return None  # no worker yet: the spawn decides (the queue never fills before)
        key = _queue_key(op)
        if self.admission.waiting(key) < self.admission.max_queue:
            return None
        slots = sum(p.worker.slots for p in self.serving(op))
        return QueueFull(
            key, self.admission.max_queue, self.admission.retry_after(key, slots=slots)
        )

    def release(self, op: Infer, pick: Pick) -> None:
        """The request `admit` gave `pick` for has ended: its slot is free for the next."""
        self.view.release(pick.worker, op.n)
        self.admission.notify(_queue_key(op))

    def _refused(self, pick: Pick, busy: WorkerBusy, since: float | None) -> float:
        """Narrate the first refusal; fail the request once refusals lasted too long."""
        worker_id = pick.worker.worker_id
        if since is None:
            NARRATE.action("infer_wait").target(worker_id).human(
                f"Worker {worker_id} cannot take the prompt yet ({busy.why}); waiting"
            ).emit()
            return time.monotonic()
        if time.monotonic() - since > UNAVAILABLE_WAIT_S:
            raise InvalidRequest(
                f"worker {worker_id} could not take the prompt within {UNAVAILABLE_WAIT_S:g} s "
                "(still loading or busy); retry later or start another worker",
                status=503,
            ) from busy
        return since

    async def admit(self, op: Infer, job: Job, *, front: bool = False) -> Pick:
        """A worker with a free slot for `op`, its slot claimed until `release`: at once
        when one is free and nobody waits before it, else once it is the head of its queue
        and a slot frees (or the worker it had started is up); `front` for a request that
        had its turn. Raises QueueFull when the queue is full."""
        key = _queue_key(op)
        if not front and not self.admission.waiting(key):
            pick = self.free(op)
            if pick is not None:
                self.view.claim(pick.worker, op.n)
                return pick
        slots = sum(p.worker.slots for p in self.serving(op))
        ticket = self.admission.join(key, front=front, slots=slots)
        said: int | None = None
        looked = False  # the hives were asked about this model (once per request)
        try:
            while True:
                ahead = self.admission.ahead(ticket)
                if ahead == 0:
                    pick = self.free(op)
                    if pick is not None:
                        self.view.claim(pick.worker, op.n)
                        return pick
                    if op.worker_id is None and self.find(op) is None:
                        if not looked:
                            looked = True
                            await self._look(op)
                        else:
                            await self.start_worker(op, job)
                        continue
                if ahead != said:
                    said = ahead
                    if self.find(op) is not None:
                        # Waiting behind busy workers, not a spawn: let `POST /v1/jobs`
                        # answer now, so the client follows the job and sees its place.
                        job.mark_ready()
                        why = f"a free slot on {op.model}"
                    else:
                        why = f"the worker being started for {op.model}"
                    NARRATE.action("queued").target(op.model).human(
                        f"Waiting for {why}: {ahead} ahead"
                    ).field("ahead", ahead).emit()
                await self.admission.wait(key, timeout_s=LOOK_AGAIN_S)
        finally:
            self.admission.leave(ticket)

    async def _look(self, op: Infer) -> None:
        """Before starting a worker: ask the hives that have not beaten yet for their
        workers, and the hives whose workers might run `op.model` under another name
        what it is called there."""
        await self.provisioner.ask_unheard()
        await self.refs.learn(op.model, {p.hive_id for p in self.loaded(op.hive_id)})


def failure_reason(exc: BaseException, *, sent: bool = False) -> str | None:
    """Why an infer job failed on rbee's side, for /metrics (`sent`: its prompt had gone
    to a worker); None for the caller's mistakes (4xx) and what is no job error (a
    cancel)."""
    if isinstance(exc, QueueFull):
        return "queue_full"
    if isinstance(exc, DaemonUnreachable):
        return "worker_gone" if sent else "unreachable"
    if isinstance(exc, UpstreamFailed):
        return "upstream_failed"
    status = getattr(exc, "status", 500)
    if not isinstance(exc, JobError) or status < 500:
        return None
    return "no_room" if "needs about" in str(exc) else "unavailable"


def _queue_key(op: Infer) -> str:
    """The queue `op` waits in: its model's (on its hive, if it names one: a request for
    another hive never waits behind it), or its worker's."""
    if op.worker_id is not None:
        return f"worker {op.worker_id}"
    return op.model if op.hive_id is None else f"{op.model} on hive {op.hive_id}"


class QueueGuard:
    """ASGI middleware: `POST /v1/jobs` with an `infer` whose queue is full answers 503
    with Retry-After and `{"error", "detail"}` at once, and creates no job (the job
    routes would answer 201 for a job that fails at once). Behind the auth and body
    limits; the body is read here and replayed to the app. A request that finds the
    queue full only after this check (a race) still fails its job with QueueFull."""

    def __init__(self, app: ASGIApp, pool: WorkerPool) -> None:
        self.app = app
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, reply: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != JOBS_PATH:
            await self.app(scope, receive, reply)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        full = self.pool.full_for(body)
        if full is not None:
            answer = JSONResponse(
                error_body(str(full), full.detail),
                status_code=503,
                headers={"Retry-After": str(full.retry_after)},
            )
            await answer(scope, receive, reply)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, reply)


def infer_handler(pool: WorkerPool) -> Handler:
    """The `infer` handler over `pool`; `POST /v1/jobs` answers once a worker took it."""

    async def infer(op: Infer, job: Job) -> dict[str, Any]:
        return await pool.serve(op, job)

    return Upstream(infer)
