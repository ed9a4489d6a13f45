"""keep_alive: stop workers nobody has used for a while, so their memory is free again.

A worker is idle while no request of this queen is in flight on it and its beats show no
slot busy; it is stopped (the hive's `worker_stop`) once idle for `keep_alive_s` (default
5 minutes, RBEE_KEEP_ALIVE), counted from the end of its last request, or from when this
queen first saw it idle (a worker loaded before a restart gets its full time). The next
prompt for its model starts a worker again. A model kept running with `model_serve`
keeps its replicas however idle (`spare`); only workers above them stop.

`KeepAlive.run()` checks every CHECK_EVERY_S (or a quarter of keep_alive, if shorter) until
cancelled: it belongs in the queen's lifespan task group.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from jobs import JobError, WorkerStop
from jobs.client import JobClient
from narration_core import Narrator
from queen._refs import quietly
from queen._workers import Pick, WorkerView
from queen.errors import UnknownHive

NARRATE = Narrator("queen-rbee")
KEEP_ALIVE_S = 300.0  # an idle worker is stopped after this long (RBEE_KEEP_ALIVE)
CHECK_EVERY_S = 30.0  # how often `run` looks for idle workers, at most


class KeepAlive:
    """Finds and stops idle workers; event-loop only, no lock."""

    def __init__(
        self,
        view: WorkerView,
        *,
        keep_alive_s: float = KEEP_ALIVE_S,
        spare: Callable[[list[Pick]], set[str]] | None = None,
    ) -> None:
        self.view = view
        self.keep_alive_s = keep_alive_s
        # idle workers -> the ids of those to keep anyway (a model's replicas)
        self.spare = spare
        self._first_idle: dict[str, float] = {}  # worker url -> monotonic time idle since
        self._busy_at: dict[str, float] = {}  # worker url -> monotonic time last seen busy

    def idle(self, now: float | None = None) -> list[Pick]:
        """The workers idle for keep_alive_s or longer at `now` (monotonic)."""
        now = time.monotonic() if now is None else now
        found: list[Pick] = []
        seen: set[str] = set()
        for pick in self.view.loaded():
            worker = pick.worker
            if worker.state != "ready" or worker.slots_busy or self.view.in_flight(worker):
                self._busy_at[worker.url] = now
                self._first_idle.pop(worker.url, None)
                continue
            seen.add(worker.url)
            # idle since its last request ended or it was last seen busy, whichever is
            # later; else since this first look
            last = max(self.view.last_used(worker) or -1.0, self._busy_at.get(worker.url, -1.0))
            since = self._first_idle.setdefault(worker.url, now if last < 0 else last)
            if now - max(since, self.view.last_used(worker) or since) >= self.keep_alive_s:
                found.append(pick)
        for url in set(self._first_idle) - seen:
            del self._first_idle[url]  # gone, or busy again
        for url in set(self._busy_at) - seen - {p.worker.url for p in self.view.loaded()}:
            del self._busy_at[url]  # gone
        return found

    async def stop_idle(self, now: float | None = None) -> list[str]:
        """Stop every idle worker through its hive (narrated); returns their ids. A hive that
        cannot be reached is tried again at the next check."""
        stopped: list[str] = []
        idle = self.idle(now)
        keep = self.spare(idle) if self.spare is not None else set()
        for pick in idle:
            worker = pick.worker
            if worker.worker_id in keep:
                continue  # one of the replicas its model keeps
            NARRATE.action("worker_idle").target(worker.worker_id).human(
                f"Worker {worker.worker_id} ({worker.model}) on hive {pick.hive_id} has been "
                f"idle for {self.keep_alive_s:g} s (keep_alive); stopping it"
            ).emit()
            hives = self.view.hives
            try:
                hive = hives.get(pick.hive_id)
                async with JobClient(hive.url, token=hives.token_for(hive.id)) as client:
                    await quietly(client, WorkerStop(hive_id=hive.id, worker_id=worker.worker_id))
            except (JobError, UnknownHive) as exc:
                NARRATE.action("worker_idle").target(worker.worker_id).level("warn").human(
                    f"Could not stop idle worker {worker.worker_id} ({exc}); trying again later"
                ).emit()
                continue
            self.view.note_stopped(worker.worker_id)
            self._first_idle.pop(worker.url, None)
            stopped.append(worker.worker_id)
        return stopped

    async def run(self) -> None:
        """Stop idle workers until cancelled."""
        every = min(CHECK_EVERY_S, self.keep_alive_s / 4)
        while True:
            await anyio.sleep(every)
            await self.stop_idle()
