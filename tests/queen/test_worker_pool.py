"""Which worker the queen's pool offers for a prompt, between a spawn and the next beat."""

from __future__ import annotations

import time

from jobs import HiveBeat, Infer, WorkerInfo
from queen.hives import HiveRegistry
from queen.infer import WorkerPool


def worker(state: str) -> WorkerInfo:
    return WorkerInfo.model_validate(
        {
            "worker_id": "w-1",
            "pid": 4242,
            "port": 9001,
            "url": "http://127.0.0.1:9001",
            "model": "tiny",
            "state": state,
        }
    )


def test_a_spawn_the_queen_forwarded_serves_before_the_beat_that_lists_it_ready() -> None:
    """A worker a forwarded worker_spawn reported ready is offered as ready while the last
    beat (sent during its loading) still says `loading`; once a forwarded stop ended it, it
    is offered no more, though that beat still lists it."""
    hives = HiveRegistry({}, secret="test-secret")
    beat = HiveBeat(
        hive_id="gpu1", url="http://h", version="1", workers=[worker("loading")], ts=time.time()
    )
    hives.beat(beat, now=time.time())
    pool = WorkerPool(hives)
    prompt = Infer(prompt="hi", model="tiny")
    before = pool.find(prompt)  # a loading worker is offered (its prompt waits out the 503s)
    assert before is not None and before.worker.state == "loading"
    pool.note_spawned("gpu1", worker("ready").model_dump() | {"log": "w-1.log"})
    pick = pool.find(prompt)
    assert pick is not None and (pick.hive_id, pick.worker.worker_id) == ("gpu1", "w-1")
    assert pick.worker.state == "ready"
    pool.note_stopped("w-1")
    assert pool.find(prompt) is None
