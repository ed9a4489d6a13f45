"""The queen's view of the workers: the beats, corrected by what the queen did itself since.

A beat lags what the queen knows: a worker it just spawned (or heard of through a hive's
`worker_list` before that hive's first beat) takes prompts at once, a worker it stopped
or saw dying takes none, even while the last beat still lists it. The view also counts the
requests this queen has in flight on each worker, which is what says whether a worker has
a free slot: beats report `slots_busy` too, but a beat is up to an interval old.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from jobs import WorkerInfo
from narration_core import Narrator
from queen.hives import Hive, HiveRegistry

NARRATE = Narrator("queen-rbee")
# Worker states that can take a prompt: starting and loading ones (perhaps ready already:
# beats lag) answer 503 until ready, which sends the request back to the queue's head.
USABLE = ("ready", "busy", "loading", "starting")


@dataclass(frozen=True, slots=True)
class Pick:
    """A worker chosen for a request, and the hive that runs it."""

    hive_id: str
    worker: WorkerInfo


class WorkerView:
    """Every worker as this queen knows it, and its requests in flight on each; event-loop
    only, no lock."""

    def __init__(self, hives: HiveRegistry) -> None:
        self.hives = hives
        self._gone: set[tuple[str, int]] = set()  # (worker_id, pid) seen dying under a request
        self._stopped: set[str] = set()  # worker ids stopped through this queen (never reused)
        # worker_id -> the worker as the queen last learned it itself (a spawn's result, a
        # hive's worker_list), and the wall time it learned it: kept until a later beat
        self._noted: dict[str, tuple[Pick, float]] = {}
        self._in_flight: Counter[str] = Counter()  # worker url -> requests this queen runs there
        self._cooling: dict[str, float] = {}  # worker url -> monotonic time it may be tried again
        self._last_used: dict[str, float] = {}  # worker url -> monotonic time a request ended

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
        for worker_id, (pick, at) in list(self._noted.items()):
            home = self.hive(pick.hive_id)
            if home is None or (home.last_beat or 0) > at + home.beat_interval_s:
                del self._noted[worker_id]  # a beat since speaks for it now
            elif hive_id in (None, pick.hive_id):
                # newer than a beat sent while it loaded, which would still say `loading`
                picks[worker_id] = pick
        return [
            p
            for p in picks.values()
            if (p.worker.worker_id, p.worker.pid) not in self._gone
            and p.worker.worker_id not in self._stopped
        ]

    def loaded(self, hive_id: str | None = None) -> list[Pick]:
        """Every live worker the queen knows of (on `hive_id`, if given). Workers of a stale
        hive count too (a hive whose beats lag on a busy machine still serves; a dead one's
        worker fails the POST and is marked gone); placement ranks them last."""
        return [p for p in self.known(hive_id) if p.worker.state in USABLE]

    def hive(self, hive_id: str) -> Hive | None:
        return next((h for h in self.hives.all() if h.id == hive_id), None)

    def note_spawned(self, hive_id: str, result: dict[str, Any]) -> Pick:
        """Remember a worker a `worker_spawn` through this queen started (its job's result):
        it takes prompts at once, before its hive's next beat lists it ready."""
        info = WorkerInfo.model_validate({k: v for k, v in result.items() if k != "log"})
        pick = Pick(hive_id, info)
        self._noted[info.worker_id] = (pick, time.time())
        return pick

    def note_listed(self, hive_id: str, workers: list[WorkerInfo]) -> None:
        """Remember the workers a hive's `worker_list` named, for a hive that has not beaten
        to this queen yet (a restarted queen): they serve before that hive's first beat."""
        now = time.time()
        for info in workers:
            self._noted.setdefault(info.worker_id, (Pick(hive_id, info), now))

    def note_stopped(self, worker_id: str) -> None:
        """A `worker_stop` through this queen ended this worker: offer it no more prompts,
        even while beats sent before the stop still list it."""
        self._noted.pop(worker_id, None)
        self._stopped.add(worker_id)

    def gone(self, worker: WorkerInfo) -> None:
        """Never route to this worker process again (it died under a request)."""
        self._gone.add((worker.worker_id, worker.pid))
        self._noted.pop(worker.worker_id, None)
        NARRATE.action("worker_gone").target(worker.worker_id).level("warn").human(
            f"Worker {worker.worker_id} at {worker.url} is gone; no more prompts go there"
        ).emit()

    def still_starting(self, worker: WorkerInfo) -> bool:
        """True while the queen's latest word on this worker process is `starting`."""
        return any(
            p.worker.worker_id == worker.worker_id
            and p.worker.pid == worker.pid
            and p.worker.state == "starting"
            for p in self.known()
        )

    def in_flight(self, worker: WorkerInfo) -> int:
        """Requests this queen has sent to `worker` that have not ended yet."""
        return self._in_flight[worker.url]

    def has_room(self, worker: WorkerInfo, now: float | None = None, *, slots: int = 1) -> bool:
        """True when a request taking `slots` sent now would find them free: that many
        fewer in flight than the worker's slots (a request asking for more than the worker
        has takes them all), and it has not just refused one (`cool`)."""
        until = self._cooling.get(worker.url)
        if until is not None and (time.monotonic() if now is None else now) < until:
            return False
        return self._in_flight[worker.url] + need(worker, slots) <= worker.slots

    def claim(self, worker: WorkerInfo, slots: int = 1) -> None:
        """Count a request taking `slots` as in flight on `worker` (before it is sent, so
        no other request takes the same slots meanwhile)."""
        self._in_flight[worker.url] += need(worker, slots)

    def release(self, worker: WorkerInfo, slots: int = 1) -> None:
        """The request `claim` counted (with the same `slots`) has ended."""
        self._in_flight[worker.url] -= need(worker, slots)
        self._last_used[worker.url] = time.monotonic()
        if self._in_flight[worker.url] <= 0:
            del self._in_flight[worker.url]

    def last_used(self, worker: WorkerInfo) -> float | None:
        """Monotonic time the last request this queen sent to `worker` ended, if any."""
        return self._last_used.get(worker.url)

    def cool(self, worker: WorkerInfo, seconds: float) -> None:
        """Offer `worker` nothing for `seconds`: it answered 503 (still loading, or its slots
        are taken by requests this queen does not count, e.g. a previous queen's)."""
        self._cooling[worker.url] = time.monotonic() + seconds


def need(worker: WorkerInfo, slots: int) -> int:
    """The slots of `worker` a request asking for `slots` (an `n` of choices) takes: at
    most all of them, so it is never refused for asking more than one worker has."""
    return max(1, min(slots, worker.slots))
