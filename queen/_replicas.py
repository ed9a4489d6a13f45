"""Replicas: keep N workers of a model running, more while its queue grows, and replace
the ones that die.

    keeper model serve builtin:tiny --replicas 2 --max-replicas 3   -> `model_serve`

The queen keeps, per model, what `model_serve` asked for (`Wanted`) in a small JSON file
in its state folder, so a restarted queen keeps serving it (after asking the hives what
they run: it never starts a duplicate of a worker that survived the restart). A loop
compares each wish with the live workers every RECONCILE_S:
- fewer than `replicas` live (a worker died: a beat no longer lists it, or a dispatch
  found it gone): start one more, placed by memory, on the hive with the fewest of them;
- `max_replicas` above the live count and requests for the model waiting in the queue
  for SCALE_UP_AFTER_S: start one more on another hive if there is room (a refusal for
  memory is not retried until the queue waits again);
- more than `replicas` live: keep_alive stops the extra ones once idle (`spare` tells it
  which idle workers the wish still needs).
A start that fails is narrated and tried again after a backoff (RETRY_S, doubling).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from jobs import FILE_MODE, Infer, JobError, ModelServe
from jobs.server import Job
from narration_core import Narrator
from queen._admission import Admission
from queen._provision import Provisioner
from queen._refs import ModelRefs
from queen._workers import Pick, WorkerView
from queen.errors import QueenError

NARRATE = Narrator("queen-rbee")
REPLICAS_FILE = "replicas.json"  # in the queen's state folder
RECONCILE_S = 1.0  # how often the loop compares wishes with live workers
SCALE_UP_AFTER_S = 2.0  # requests waiting this long for a model add a worker (max_replicas)
RETRY_S = (2.0, 60.0)  # a failed start is tried again after this long, doubling up to the max


@dataclass(frozen=True, slots=True)
class Wanted:
    """How many workers of `model` (a ref or catalog id) to keep, on `hive_id` or any."""

    model: str
    replicas: int
    max_replicas: int
    hive_id: str | None = None

    @classmethod
    def of(cls, op: ModelServe) -> Wanted:
        most = op.max_replicas if op.max_replicas is not None else op.replicas
        return cls(op.model, op.replicas, max(most, op.replicas), op.hive_id)

    def describe(self) -> str:
        most = f" (up to {self.max_replicas} while its queue grows)" * (
            self.max_replicas > self.replicas
        )
        where = f" on hive {self.hive_id}" if self.hive_id else ""
        return f"{self.model}: {self.replicas} worker{'s' * (self.replicas != 1)}{where}{most}"


class ReplicaStore:
    """The wishes on disk (None: kept in memory only, for tests of the rules)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> dict[str, Wanted]:
        """The saved wishes; a missing file is none, an unreadable one is narrated and
        treated as none (the next `model_serve` writes a good one)."""
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            wishes = [Wanted(**entry) for entry in data["served"]]
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            NARRATE.action("replicas").level("warn").human(
                f"Cannot read the replicas the queen kept in {self.path} ({exc}); serving "
                "none until `keeper model serve` is run again"
            ).emit()
            return {}
        return {w.model: w for w in wishes}

    def save(self, wanted: dict[str, Wanted]) -> None:
        """Write the wishes atomically (a crash leaves the old file or the new one)."""
        if self.path is None:
            return
        body = json.dumps({"served": [asdict(w) for w in wanted.values()]}, indent=1)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(body)
        os.replace(tmp, self.path)


class Replicas:
    """The wishes and the loop that keeps them; event-loop only, locks per model."""

    def __init__(
        self,
        view: WorkerView,
        refs: ModelRefs,
        provisioner: Provisioner,
        admission: Admission,
        store: ReplicaStore,
        *,
        spawned: Callable[[str], None] | None = None,
    ) -> None:
        self.view = view
        self.refs = refs
        self.provisioner = provisioner
        self.admission = admission
        self.store = store
        self.wanted = store.load()
        self._spawned = spawned  # told the model of each replica started (wakes its queue)
        self._locks: dict[str, anyio.Lock] = {}
        self._queued_since: dict[str, float] = {}  # model -> monotonic time requests waited
        self._retry_at: dict[str, tuple[float, float]] = {}  # model -> (when, backoff)
        self._wake = anyio.Event()

    def table(self) -> list[dict[str, Any]]:
        """Every wish with its live workers, for status and `keeper model list`."""
        return [
            {**asdict(w), "live": [p.worker.worker_id for p in self.live(w)]}
            for w in self.wanted.values()
        ]

    def live(self, wanted: Wanted) -> list[Pick]:
        """The live workers that count towards `wanted`: not those of a stale hive (its
        beats stopped: a worker is started elsewhere; keep_alive stops the extra one
        once that hive is back and it idles)."""
        stale = {h.id for h in self.view.hives.all() if h.is_stale()}
        return [
            p
            for p in self.view.loaded(wanted.hive_id)
            if p.hive_id not in stale and self.refs.serves(p.hive_id, p.worker.model, wanted.model)
        ]

    def queued(self, wanted: Wanted) -> int:
        """Requests waiting in the queue for `wanted`'s model, under any of its names."""
        ids = {self.refs.cached(h.id, wanted.model) for h in self.view.hives.all()} - {None}
        return sum(
            count
            for key, count in self.admission.statistics().items()
            if key == wanted.model
            or any(self.refs.cached(h.id, key) in ids for h in self.view.hives.all())
        )

    def spare(self, idle: list[Pick]) -> set[str]:
        """Among `idle` workers (keep_alive's candidates), those a wish still needs: a
        model keeps its `replicas` however idle they are."""
        keep: set[str] = set()
        for wanted in self.wanted.values():
            live = self.live(wanted)
            ids = {p.worker.worker_id for p in live}
            mine = [p.worker.worker_id for p in idle if p.worker.worker_id in ids]
            may_stop = max(0, len(live) - wanted.replicas)
            keep.update(mine[may_stop:])
        return keep

    async def serve(self, op: ModelServe, job: Job | None = None) -> dict[str, Any]:
        """Record `op`'s wish (0 replicas: forget it), then start the workers it lacks,
        narrated into `job`; returns the table of wishes."""
        if op.replicas == 0:
            gone = self.wanted.pop(op.model, None)
            self.store.save(self.wanted)
            NARRATE.action("model_serve").target(op.model).human(
                f"No longer keeping workers of {op.model} running; idle ones stop after keep_alive"
                if gone is not None
                else f"{op.model} was not kept running; nothing to change"
            ).emit()
            return {"served": self.table()}
        wanted = Wanted.of(op)
        self.wanted[op.model] = wanted
        self.store.save(self.wanted)
        self._retry_at.pop(op.model, None)
        NARRATE.action("model_serve").target(op.model).human(f"Keeping {wanted.describe()}").emit()
        await self.reconcile(wanted, job)
        live = len(self.live(wanted))
        NARRATE.action("model_serve").target(op.model).human(
            f"{op.model} has {live} worker{'s' * (live != 1)} running"
        ).emit()
        self._wake.set()
        return {"served": self.table()}

    async def reconcile(self, wanted: Wanted, job: Job | None = None) -> None:
        """Start the workers `wanted` lacks now (one at a time; raises when one fails)."""
        lock = self._locks.setdefault(wanted.model, anyio.Lock())
        async with lock:
            await self.provisioner.ask_unheard()  # once per hive: what a restart left running
            hive_ids = {p.hive_id for p in self.view.loaded(wanted.hive_id)}
            await self.refs.learn(wanted.model, hive_ids)
            # At most the workers lacking on entry: a start that never counts as live (its
            # hive's beats lag) is retried by the next round, not started again and again.
            for _ in range(max(0, self._target(wanted) - len(self.live(wanted)))):
                target = self._target(wanted)
                live = self.live(wanted)
                if len(live) >= target:
                    return
                load = Counter(p.hive_id for p in live)
                op = Infer(model=wanted.model, hive_id=wanted.hive_id)

                def enough(target: int = target) -> Pick | None:
                    live = self.live(wanted)
                    return live[-1] if len(live) >= target else None

                pick = await self.provisioner.add_worker(op, job, load=load, enough=enough)
                if pick is not None:
                    self._queued_since.pop(wanted.model, None)
                    if self._spawned is not None:
                        self._spawned(wanted.model)

    def _target(self, wanted: Wanted, now: float | None = None) -> int:
        """How many workers `wanted` needs now: its replicas, one more than live while its
        queue has waited SCALE_UP_AFTER_S (up to max_replicas)."""
        now = time.monotonic() if now is None else now
        live = len(self.live(wanted))
        warming = any(p.worker.state in ("starting", "loading") for p in self.live(wanted))
        if wanted.max_replicas <= max(live, wanted.replicas) or warming or not self.queued(wanted):
            self._queued_since.pop(wanted.model, None)
            return wanted.replicas
        since = self._queued_since.setdefault(wanted.model, now)
        if now - since >= SCALE_UP_AFTER_S:
            NARRATE.action("model_scale").target(wanted.model).human(
                f"Requests for {wanted.model} have waited {now - since:.0f} s with "
                f"{live} worker{'s' * (live != 1)}; adding one (up to {wanted.max_replicas})"
            ).emit()
            return live + 1
        return max(wanted.replicas, live)

    async def run(self) -> None:
        """Keep every wish until cancelled (the queen's lifespan). A hive is asked
        nothing while no wish needs a worker; before a start, the hives that have not
        beaten are asked what they run (`add_worker`), so a restart starts no duplicate."""
        while True:
            for wanted in list(self.wanted.values()):
                if self.wanted.get(wanted.model) is not wanted:
                    continue  # changed meanwhile
                await self._keep(wanted)
            self._wake = anyio.Event()
            with anyio.move_on_after(RECONCILE_S):
                await self._wake.wait()

    async def _keep(self, wanted: Wanted) -> None:
        now = time.monotonic()
        when, backoff = self._retry_at.get(wanted.model, (0.0, RETRY_S[0]))
        if now < when or self._locks.setdefault(wanted.model, anyio.Lock()).locked():
            return
        try:
            await self.reconcile(wanted)
        except (JobError, QueenError) as exc:
            NARRATE.action("replicas").target(wanted.model).level("warn").human(
                f"Could not start a worker for {wanted.model} ({exc}); trying again in "
                f"{backoff:g} s"
            ).emit()
            self._retry_at[wanted.model] = (now + backoff, min(backoff * 2, RETRY_S[1]))
            self._queued_since.pop(wanted.model, None)
        except Exception as exc:  # a fault of ours: said, retried, never the queen's end
            NARRATE.action("replicas").target(wanted.model).level("error").human(
                f"Keeping workers of {wanted.model} failed unexpectedly ({exc!r}); trying "
                f"again in {backoff:g} s"
            ).emit()
            self._retry_at[wanted.model] = (now + backoff, min(backoff * 2, RETRY_S[1]))
        else:
            self._retry_at.pop(wanted.model, None)
