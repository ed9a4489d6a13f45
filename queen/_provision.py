"""Provisioning: start a worker for a model no worker serves, once, however many ask.

One spawn per (hive, model) at a time: requests arriving meanwhile wait for that worker
(`worker_wait`) rather than start one each, whether they name the model by the same ref
or another (`builtin:tiny` and `tiny`: the spawn is keyed by catalog id too). Before the
first spawn on a hive that has not beaten to this queen yet (a restarted queen, a hive
backing off), the queen asks that hive's `worker_list`, so a model it already runs is
used, never loaded twice. A cached catalog id the hive refuses (the model was deleted) is
forgotten and the model fetched again, once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import anyio

from jobs import (
    DaemonUnreachable,
    Infer,
    InvalidRequest,
    JobError,
    ModelDownload,
    UpstreamFailed,
    UpstreamUnreachable,
    WorkerSpawn,
)
from jobs.client import JobClient
from jobs.relay import submit_and_forward
from jobs.server import Job
from narration_core import Narrator
from queen._memory import Placement, Room, choose_device, estimate, lendable, roomiest
from queen._placement import candidates, hive_to_start_on
from queen._placements_route import Placements
from queen._refs import ASK_TIMEOUT_S, ModelRefs, list_workers, quietly
from queen._split_plan import CTX_DEFAULT, SLOTS_DEFAULT
from queen._splits import Lent, Splits
from queen._workers import Pick, WorkerView
from queen.errors import QueenError
from queen.hives import Hive, HiveRegistry

NARRATE = Narrator("queen-rbee")
NOT_IN_CATALOG = "not in this hive's catalog"  # the hive's refusal of an id it lacks

Find = Callable[[], Pick | None]


class Provisioner:
    """Starts workers for `infer` on the hives; event-loop only, no lock but its own."""

    def __init__(
        self,
        hives: HiveRegistry,
        view: WorkerView,
        refs: ModelRefs,
        *,
        spawned: Callable[[str, str], None] | None = None,
        placement: Placement = "spread",
        placements: Placements | None = None,
        splits: Splits | None = None,
    ) -> None:
        self.hives = hives
        self.placements = placements  # with `splits`: a model no hive holds is split
        self.splits = splits
        self.view = view
        self.refs = refs
        self.placement = placement
        self._spawned = spawned  # told (hive, model) of each worker started: /metrics
        self._starting: dict[tuple[str, str], anyio.Lock] = {}  # (hive, ref or id) -> lock
        self._asked: set[str] = set()  # hives whose worker_list this queen has read
        self._asking = anyio.Lock()

    def hive_for(self, op: Infer) -> Hive:
        """The hive to start a worker on: the one named, else the one placement picks."""
        if op.hive_id is not None:
            return self.hives.get(op.hive_id)
        return hive_to_start_on(self.hives.all(), op.model)

    async def choose_hive(self, op: Infer, *, load: Mapping[str, int] | None = None) -> Hive:
        """The hive to start a worker for `op` on: among the one named or the fresh ones,
        by memory when hives report it (the placement setting: spread or pack;
        InvalidRequest, 503, when none fits), else as `hive_for` says. `load` (a replica's
        start: workers of the model per hive) spreads a model's workers over the hives and
        never refuses for several hives: the least loaded one takes it."""
        if op.hive_id is not None:
            hives = [self.hives.get(op.hive_id)]
        else:
            hives = candidates(self.hives.all())
        rooms = [Room(h.id, free_memory(h)) for h in hives]
        if any(r.free_bytes is not None for r in rooms):
            await self.refs.learn(op.model, {h.id for h in hives if h.beats})  # its size
            kv = [
                p.worker.kv_bytes
                for p in self.view.loaded()
                if p.worker.kv_bytes is not None
                and self.refs.serves(p.hive_id, p.worker.model, op.model)
            ]
            need = self.refs.need_of(op.model) or estimate(
                self.refs.size_of(op.model), kv_bytes=max(kv, default=None)
            )
            room = roomiest(rooms, need, op.model, placement=self.placement, load=load)
            if room is not None:
                return self.hives.get(room.hive_id)
        if load is not None and hives:
            return min(hives, key=lambda h: (load.get(h.id, 0), h.is_stale(), h.id))
        return self.hive_for(op)

    async def ask_unheard(self) -> None:
        """Read the `worker_list` of every hive that has not beaten to this queen, once,
        at once, each within ASK_TIMEOUT_S (one that does not answer has no workers)."""
        async with self._asking:
            unheard = [h for h in self.hives.all() if not h.beats and h.id not in self._asked]

            async def one(hive: Hive) -> None:
                with anyio.move_on_after(ASK_TIMEOUT_S):
                    try:  # a hive known only by default is called once it has beaten
                        hive = await self.hives.reachable(hive.id, wait_s=ASK_TIMEOUT_S)
                    except QueenError:
                        return  # never heard: no workers to know of
                    if hive.beats:
                        return  # its beat listed its workers
                    try:
                        async with JobClient(
                            hive.url, token=self.hives.token_for(hive.id)
                        ) as client:
                            workers = await list_workers(client, hive.id)
                    except JobError:
                        return
                    self.view.note_listed(hive.id, workers)

            async with anyio.create_task_group() as tg:
                for hive in unheard:
                    self._asked.add(hive.id)
                    tg.start_soon(one, hive)

    async def start_worker(self, op: Infer, job: Job, find: Find) -> Pick:
        """A worker serving `op.model`: one `find` gives once the hives were asked, else a
        new one (the model fetched first when the hive lacks it), narrated into `job`."""
        await self.ask_unheard()
        found = find()
        if found is not None:
            return found
        try:
            chosen = await self.choose_hive(op)
        except InvalidRequest as refused:  # 503: no hive has the memory
            if refused.status != 503 or op.hive_id is not None:
                raise
            return await self._start_split(op, job, find, refused)
        hive = await self.hives.reachable(chosen.id)  # its beat's URL
        async with self._lock(hive, op.model, op.model):
            found = find()  # the request this one waited for started it
            if found is not None:
                return found
            try:
                return await self._start(hive, op, job, find)
            except UpstreamFailed as exc:
                if NOT_IN_CATALOG not in str(exc) or self.refs.cached(hive.id, op.model) is None:
                    raise
                NARRATE.action("model_gone").target(op.model).human(
                    f"Hive {hive.id} no longer has {op.model} (deleted?); fetching it again"
                ).emit()
                self.refs.forget(hive.id, op.model)
                return await self._start(hive, op, job, find)

    async def add_worker(
        self, op: Infer, job: Job | None, *, load: Mapping[str, int], enough: Find
    ) -> Pick | None:
        """Start one more worker for `op.model` (a replica), on the hive placement picks
        given `load` (the model's workers per hive); narrated into `job` when given, else
        quietly. None when `enough()` gives a worker, once the hive's lock is held and the
        model's catalog id is known: one started meanwhile (by a prompt, or before a
        restart) already made up the count."""
        await self.ask_unheard()
        if enough() is not None:
            return None
        hive = await self.hives.reachable((await self.choose_hive(op, load=load)).id)
        async with self._lock(hive, op.model, op.model):
            if enough() is not None:
                return None
            return await self._start(hive, op, job, enough, replica=True)

    async def _start_split(self, op: Infer, job: Job, find: Find, refused: InvalidRequest) -> Pick:
        """The worker for a model no hive can hold alone, split by layers across hives
        (queen._splits); raises the plan's refusal when they cannot hold it together, or
        `refused` when splitting is off or the model's shape is unknown."""
        if self.placements is None or self.splits is None:
            raise refused
        try:
            plan = await self.placements.plan(op.model, ctx=CTX_DEFAULT, slots=SLOTS_DEFAULT)
        except InvalidRequest as exc:
            raise refused if exc.status == 404 else exc from None
        if not plan.split:
            raise refused
        hive = await self.hives.reachable(plan.worker_hive)
        async with self._lock(hive, op.model, op.model):
            found = find()  # the request this one waited for started it
            if found is not None:
                return found
            lent = await self.splits.lend(plan, job)
            try:
                pick = await self._start(hive, op, job, find, lent=lent)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.splits.failed(lent)
                raise
            self.splits.started(lent, pick.hive_id, pick.worker.worker_id)
            return pick

    def _lock(self, hive: Hive, key: str, model: str) -> anyio.Lock:
        """The lock held while a worker for `key` (a ref, or `id:` a catalog id) starts on
        `hive`; says so when another request holds it."""
        lock = self._starting.setdefault((hive.id, key), anyio.Lock())
        if lock.locked():
            NARRATE.action("worker_wait").target(hive.id).human(
                f"Another request is starting a worker for {model} on hive {hive.id}; "
                "waiting to use it"
            ).emit()
        return lock

    async def _start(
        self,
        hive: Hive,
        op: Infer,
        job: Job | None,
        find: Find,
        *,
        replica: bool = False,
        lent: Lent | None = None,
    ) -> Pick:
        hop = f"hive:{hive.id}"
        hive = await self.hives.reachable(hive.id)  # this machine's: once it has beaten
        async with JobClient(hive.url, token=self.hives.token_for(hive.id)) as client:
            try:
                model_id = await self.refs.resolve(client, hive.id, op.model)
            except DaemonUnreachable as exc:
                raise UpstreamUnreachable(f"hive {hive.id}", hive.url, reason=exc.reason) from exc
            if model_id is None:
                NARRATE.action("model_download").target(op.model).human(
                    f"Hive {hive.id} does not have {op.model} yet; fetching it first"
                ).emit()
                download = ModelDownload(hive_id=hive.id, model=op.model)
                entry = await (
                    quietly(client, download)
                    if job is None
                    else submit_and_forward(client, download, into=job, hop=hop)
                )
                model_id = str(entry["id"])
                self.refs.remember(hive.id, op.model, model_id)
            async with self._lock(hive, f"id:{model_id}", op.model):  # or another ref of it
                again = find()  # a worker of that catalog id may run already
                if again is not None:
                    return again
                NARRATE.action("worker_spawn").target(hive.id).human(
                    f"Starting one more worker for {op.model} on hive {hive.id} (replicas)"
                    if replica
                    else f"No worker has {op.model} loaded; starting one on hive {hive.id}"
                ).emit()
                need = estimate(self.refs.size_of(op.model) or self.refs.size_of(model_id))
                if lent is None:
                    device = choose_device(gpu_memory(hive), need)
                    spawn = WorkerSpawn(hive_id=hive.id, model=model_id, device=device)
                else:  # a split's worker: its share on this CPU, the rest on the peers
                    spawn = WorkerSpawn(
                        hive_id=hive.id,
                        model=model_id,
                        rpc_servers=list(lent.servers),
                        rpc_links=list(lent.links),
                        local_share=lent.local_share,
                    )
                result = await (
                    quietly(client, spawn)
                    if job is None
                    else submit_and_forward(client, spawn, into=job, hop=hop)
                )
                if self._spawned is not None:
                    self._spawned(hive.id, model_id)
                return self.view.note_spawned(hive.id, result)


def free_memory(hive: Hive) -> int | None:
    """The memory placement may use on `hive`: the free memory its last beat reported,
    capped by what it lends (`--lend-memory`); None before its first beat."""
    return lendable(hive.memory_free_bytes, hive.lend_bytes)


def gpu_memory(hive: Hive) -> dict[str, int]:
    """Free VRAM per GPU of `hive` (`cuda:N` -> bytes) as its last beat reported; empty
    for a CPU-only hive or a build without GPU offload."""
    return dict(hive.gpu_free_bytes)
