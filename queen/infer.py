"""The queen's `infer`: pick a worker with the model (or start one), relay its tokens.

    keeper -> queen job (infer) -> POST worker /v1/inference -> the worker job's tokens

A worker is chosen from the heartbeats (and the workers just spawned through this queen,
by `infer` or a forwarded `worker_spawn`, which the next beat has not listed ready yet;
workers stopped through it are left out): `worker_id` names one; otherwise a loaded worker of
the model on `hive_id` (or any fresh hive), the one with the fewest requests this queen
has in flight on it, idle before busy. With none, the queen spawns one on the given hive
or the only hive, forwarding `model_download` first when the hive's catalog lacks the
ref, and `worker_spawn` after; both narrate into the job as every hive operation does.
Prompts for the same model and hive that arrive meanwhile wait for that worker
(`worker_wait`) rather than start one each.

Inference goes to the worker directly (the hive never sees it) and its job is relayed
with `jobs.relay.forward`: tokens stay `token` events; the worker's `inference_start` and
`inference_complete` narration arrive with origin `worker:<id>`. Cancelling the queen job
cancels the worker's job. A worker that vanishes mid-stream (kill -9) fails the job
naming it within a bounded time (RECONNECTS short reconnects), and is marked gone so
no later request is routed to it, even before its hive's next beat drops it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import anyio

from jobs import (
    DaemonUnreachable,
    Infer,
    InvalidRequest,
    JobError,
    ModelDownload,
    ModelList,
    UpstreamUnreachable,
    WorkerInfo,
    WorkerSpawn,
)
from jobs.client import JobClient
from jobs.relay import forward, submit_and_forward
from jobs.server import Handler, Job, Upstream
from narration_core import Narrator
from queen.hives import Hive, HiveRegistry

NARRATE = Narrator("queen-rbee")
INFERENCE_PATH = "/v1/inference"  # the worker's route (docs/api.md)
RECONNECTS = 3  # a dropped worker stream is retried 0.1 + 0.2 + 0.4 s, then the job fails
# Worker states that can take a prompt: busy ones queue it; starting and loading ones
# (perhaps ready already: beats lag) answer 503 until ready, which `run` waits out.
USABLE = ("ready", "busy", "loading", "starting")
UNAVAILABLE_WAIT_S = 60.0  # how long a prompt waits on a worker that answers 503
UNAVAILABLE_RETRY_S = 0.25  # between its tries
SPAWN_DEVICE = "cpu"  # what a worker spawned for `infer` runs on


@dataclass(frozen=True, slots=True)
class Pick:
    """A worker chosen for a request, and the hive that runs it."""

    hive_id: str
    worker: WorkerInfo


class WorkerPool:
    """Which worker serves a model, as far as this queen knows; event-loop only, no lock."""

    def __init__(self, hives: HiveRegistry) -> None:
        self.hives = hives
        self._model_ids: dict[tuple[str, str], str] = {}  # (hive, ref) -> the catalog id
        self._gone: set[tuple[str, int]] = set()  # (worker_id, pid) seen dying under a request
        self._stopped: set[str] = set()  # worker ids stopped through this queen (never reused)
        self._spawned: dict[str, tuple[Pick, float]] = {}  # worker_id -> pick, when spawned
        self._in_flight: Counter[str] = Counter()  # worker url -> requests this queen runs there
        # (hive, ref) -> held while one request fetches the model and spawns its worker, so
        # prompts arriving meanwhile wait for that worker instead of starting their own
        self._starting: dict[tuple[str, str], anyio.Lock] = {}

    def loaded(self, hive_id: str | None = None) -> list[Pick]:
        """Every live worker the queen knows of (on `hive_id`, if given). Workers of a stale
        hive count too (a hive whose beats lag on a busy machine still serves; a dead one's
        worker fails the POST and is marked gone); `find` ranks them last."""
        return [p for p in self.known(hive_id) if p.worker.state in USABLE]

    def known(self, hive_id: str | None = None) -> list[Pick]:
        """Every worker as this queen knows it now, in any state: the beats, overridden by
        what it did itself since (a spawn newer than the last beat, a stop, a worker seen
        dying), so `queen_status` shows a spawn at once rather than after the next beat."""
        picks: dict[str, Pick] = {}
        for hive in self.hives.all():
            if hive_id is not None and hive.id != hive_id:
                continue
            for worker in hive.workers:
                picks[worker.worker_id] = Pick(hive.id, worker)
        for worker_id, (pick, at) in list(self._spawned.items()):
            home = self._hive(pick.hive_id)
            if home is None or (home.last_seen or 0) > at + home.beat_interval_s:
                del self._spawned[worker_id]  # a beat since the spawn speaks for it now
            elif hive_id in (None, pick.hive_id):
                # newer than a beat sent while it loaded, which would still say `loading`
                picks[worker_id] = pick
        return [
            p
            for p in picks.values()
            if (p.worker.worker_id, p.worker.pid) not in self._gone
            and p.worker.worker_id not in self._stopped
        ]

    def note_spawned(self, hive_id: str, result: dict[str, Any]) -> Pick:
        """Remember a worker a `worker_spawn` through this queen started (its job's result):
        it takes prompts at once, before its hive's next beat lists it ready."""
        info = WorkerInfo.model_validate({k: v for k, v in result.items() if k != "log"})
        pick = Pick(hive_id, info)
        self._spawned[info.worker_id] = (pick, time.time())
        return pick

    def note_stopped(self, worker_id: str) -> None:
        """A `worker_stop` through this queen ended this worker: offer it no more prompts,
        even while beats sent before the stop still list it."""
        self._spawned.pop(worker_id, None)
        self._stopped.add(worker_id)

    def model_names(self) -> set[str]:
        """The models loaded anywhere, by catalog id, and the refs they were asked for by."""
        names = {p.worker.model for p in self.loaded()}
        names.update(ref for (_, ref), model_id in self._model_ids.items() if model_id in names)
        return names

    def find(self, op: Infer) -> Pick | None:
        """The best loaded worker for `op`, or None; raises InvalidRequest for an unknown
        `worker_id`."""
        picks = self.loaded(op.hive_id)
        if op.worker_id is not None:
            named = [p for p in picks if p.worker.worker_id == op.worker_id]
            if not named:
                known = sorted(p.worker.worker_id for p in picks)
                raise InvalidRequest(  # 404: the body is valid, the worker it names is not there
                    f"no live worker {op.worker_id!r} is known to the queen "
                    f"(known: {', '.join(known) or 'none'}); "
                    "`keeper worker list` shows a hive's workers",
                    detail={"worker_id": op.worker_id, "known": known},
                    status=404,
                )
            return named[0]
        fitting = [p for p in picks if self._serves(p, op.model)]
        stale = {h.id for h in self.hives.all() if h.is_stale()}
        return min(
            fitting,
            key=lambda p: (
                p.hive_id in stale,
                p.worker.state not in ("ready", "busy"),
                self._in_flight[p.worker.url],
                p.worker.state != "ready",
            ),
            default=None,
        )

    def _serves(self, pick: Pick, ref: str) -> bool:
        model = pick.worker.model
        return model == ref or model == self._model_ids.get((pick.hive_id, ref))

    def _hive(self, hive_id: str) -> Hive | None:
        return next((h for h in self.hives.all() if h.id == hive_id), None)

    def hive_for(self, op: Infer) -> Hive:
        """The hive to start a worker on: the one named, else the only fresh one (or the
        only hive at all: a late beat does not make a hive gone; a dead one fails the call)."""
        if op.hive_id is not None:
            return self.hives.get(op.hive_id)
        known = self.hives.all()
        fresh = [h for h in known if not h.is_stale()]
        if len(fresh) == 1:
            return fresh[0]
        if not fresh and len(known) == 1:
            return known[0]
        if not fresh:
            raise InvalidRequest(  # 503: the request is fine, the queen cannot serve it yet
                f"no worker has {op.model} loaded and no hive is running to start one; "
                "start a hive with `keeper hive start`",
                status=503,
            )
        names = ", ".join(h.id for h in fresh)
        raise InvalidRequest(
            f"no worker has {op.model} loaded and several hives could start one ({names}); "
            "name one with --hive",
            status=400,
        )

    async def start_worker(self, op: Infer, job: Job) -> Pick:
        """Make the model available on a hive and spawn a worker for it (narrated). One
        request at a time does so per hive and model; the others wait and take its worker."""
        hive = self.hive_for(op)
        lock = self._starting.setdefault((hive.id, op.model), anyio.Lock())
        if lock.locked():
            NARRATE.action("worker_wait").target(hive.id).human(
                f"Another request is starting a worker for {op.model} on hive {hive.id}; "
                "waiting to use it"
            ).emit()
        async with lock:
            started = self.find(op)  # by the request this one waited for
            return started if started is not None else await self._start(hive, op, job)

    async def _start(self, hive: Hive, op: Infer, job: Job) -> Pick:
        hop = f"hive:{hive.id}"
        async with JobClient(hive.url, token=self.hives.token_for(hive.id)) as client:
            try:
                model_id = await self._model_id(client, hive.id, op.model)
            except DaemonUnreachable as exc:
                raise UpstreamUnreachable(f"hive {hive.id}", hive.url, reason=exc.reason) from exc
            if model_id is None:
                NARRATE.action("model_download").target(op.model).human(
                    f"Hive {hive.id} does not have {op.model} yet; fetching it first"
                ).emit()
                entry = await submit_and_forward(
                    client, ModelDownload(hive_id=hive.id, model=op.model), into=job, hop=hop
                )
                model_id = str(entry["id"])
                self._model_ids[(hive.id, op.model)] = model_id
            again = self.find(op)  # a worker of that catalog id may run already
            if again is not None:
                return again
            NARRATE.action("worker_spawn").target(hive.id).human(
                f"No worker has {op.model} loaded; starting one on hive {hive.id}"
            ).emit()
            spawn = WorkerSpawn(hive_id=hive.id, model=model_id, device=SPAWN_DEVICE)
            result = await submit_and_forward(client, spawn, into=job, hop=hop)
        return self.note_spawned(hive.id, result)

    async def _model_id(self, client: JobClient, hive_id: str, ref: str) -> str | None:
        """The hive's catalog id for `ref` when it has the model available, else None."""
        known = self._model_ids.get((hive_id, ref))
        if known is not None:
            return known
        for entry in await _models(client, hive_id):
            if ref in (entry.get("id"), entry.get("source")) and entry.get("status") == (
                "available"
            ):
                self._model_ids[(hive_id, ref)] = str(entry["id"])
                return str(entry["id"])
        return None

    async def run(self, pick: Pick, op: Infer, job: Job) -> dict[str, Any]:
        """Send the prompt to `pick`'s worker and relay its job into `job`."""
        worker = pick.worker
        body: dict[str, Any] = {
            "max_tokens": op.max_tokens,
            "temperature": op.temperature,
            "top_p": op.top_p,
            "top_k": op.top_k,
            "seed": op.seed,
            "stop": op.stop,
        }
        if op.messages is not None:  # the worker renders them through its model's template
            body["messages"] = [m.model_dump() for m in op.messages]
        else:
            body["prompt"] = op.prompt
        self._in_flight[worker.url] += 1
        try:
            async with JobClient(worker.url, max_reconnects=RECONNECTS) as client:
                reply = await self._post(client, worker, body)
                job.mark_ready()
                NARRATE.action("infer").target(worker.worker_id).human(
                    f"Prompt for {op.model} sent to worker {worker.worker_id} on hive "
                    f"{pick.hive_id} ({worker.url})"
                ).emit()
                try:
                    result = await forward(
                        client, str(reply["job_id"]), into=job, hop=f"worker:{worker.worker_id}"
                    )
                except DaemonUnreachable:
                    self.gone(worker)
                    raise
        finally:
            self._in_flight[worker.url] -= 1
            if not self._in_flight[worker.url]:
                del self._in_flight[worker.url]
        return {**(result or {}), "worker_id": worker.worker_id, "hive_id": pick.hive_id}

    async def _post(
        self, client: JobClient, worker: WorkerInfo, body: dict[str, Any]
    ) -> dict[str, Any]:
        """POST the prompt; a 503 (still loading, queue full) is retried for a while, and so
        is no answer at all from a worker its hive still lists as `starting` (its server
        is not up yet: another prompt's spawn, a beat sent while it started)."""
        name = f"worker {worker.worker_id}"
        waited = False
        with anyio.move_on_after(UNAVAILABLE_WAIT_S):
            while True:
                try:
                    reply: dict[str, Any] = await client.post(INFERENCE_PATH, body)
                    return reply
                except DaemonUnreachable as exc:
                    if not _still_starting(self.known(), worker):
                        self.gone(worker)
                        raise UpstreamUnreachable(name, worker.url, reason=exc.reason) from exc
                    why = "it is still starting"
                except JobError as exc:
                    if getattr(exc, "status", None) != 503:
                        raise InvalidRequest(f"{name} refused the prompt: {exc}") from exc
                    why = str(exc)
                if not waited:
                    NARRATE.action("infer_wait").target(worker.worker_id).human(
                        f"Worker {worker.worker_id} cannot take the prompt yet ({why}); waiting"
                    ).emit()
                    waited = True
                await anyio.sleep(UNAVAILABLE_RETRY_S)
        raise InvalidRequest(
            f"{name} could not take the prompt within {UNAVAILABLE_WAIT_S:g} s (still loading "
            "or busy); retry later or start another worker",
            status=503,
        )

    def gone(self, worker: WorkerInfo) -> None:
        """Never route to this worker process again (it died under a request)."""
        self._gone.add((worker.worker_id, worker.pid))
        self._spawned.pop(worker.worker_id, None)
        NARRATE.action("worker_gone").target(worker.worker_id).level("warn").human(
            f"Worker {worker.worker_id} at {worker.url} is gone; no more prompts go there"
        ).emit()


async def catalog_names(hives: HiveRegistry) -> set[str]:
    """Every model id and ref in the fresh hives' catalogs (hives that fail are skipped)."""
    names: set[str] = set()
    for hive in hives.all():
        if hive.is_stale():
            continue
        try:
            async with JobClient(hive.url, token=hives.token_for(hive.id)) as client:
                models = await _models(client, hive.id)
        except JobError:
            continue
        for entry in models:
            if entry.get("status") == "available":
                names.update(str(entry[k]) for k in ("id", "source") if entry.get(k))
    return names


def _still_starting(known: list[Pick], worker: WorkerInfo) -> bool:
    """True while the queen's latest word on this worker process is `starting`."""
    return any(
        p.worker.worker_id == worker.worker_id
        and p.worker.pid == worker.pid
        and p.worker.state == "starting"
        for p in known
    )


async def _models(client: JobClient, hive_id: str) -> list[dict[str, Any]]:
    """The hive's catalog entries, from a `model_list` job read quietly (not relayed)."""
    job_id = await client.submit(ModelList(hive_id=hive_id))
    result: dict[str, Any] = {}
    async for event in client.stream(job_id):
        if event.is_final:
            result = event.data.get("result") or {}
    return list(result.get("models", []))


def infer_handler(pool: WorkerPool) -> Handler:
    """The `infer` handler over `pool`; `POST /v1/jobs` answers once a worker took it."""

    async def infer(op: Infer, job: Job) -> dict[str, Any]:
        pick = pool.find(op) or await pool.start_worker(op, job)
        return await pool.run(pick, op, job)

    return Upstream(infer)
