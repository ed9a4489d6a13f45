"""keep_alive without processes: which workers count as idle, and for how long; and the
RBEE_KEEP_ALIVE setting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobs import HiveBeat, RbeePaths, WorkerInfo
from queen._keepalive import KEEP_ALIVE_S, KeepAlive
from queen._workers import WorkerView
from queen.errors import QueenConfigError
from queen.hives import HiveRegistry
from queen.settings import QueenSettings


def view_of(*workers: dict[str, object]) -> WorkerView:
    hives = HiveRegistry({}, secret="test-secret")
    listed = [
        WorkerInfo.model_validate(
            {"pid": 7, "port": 9001, "url": f"http://127.0.0.1:900{i}", "model": "tiny", **w}
        )
        for i, w in enumerate(workers)
    ]
    beat = HiveBeat(hive_id="a", url="http://a", version="1", workers=listed, ts=0)
    hives.beat(beat, now=time.time())
    return WorkerView(hives)


def test_a_ready_worker_is_idle_after_keep_alive_from_when_it_was_first_seen_idle() -> None:
    """Idle time counts from the first look (a worker loaded before a restart gets its
    full keep_alive), a busy slot or a request in flight resets it, loading ones never
    count."""
    view = view_of(
        {"worker_id": "w-1", "state": "ready"},
        {"worker_id": "w-2", "state": "ready", "slots_busy": 1},
        {"worker_id": "w-3", "state": "loading"},
    )
    keep = KeepAlive(view, keep_alive_s=10)
    t = time.monotonic()
    assert keep.idle(now=t) == []
    assert [p.worker.worker_id for p in keep.idle(now=t + 10)] == ["w-1"]
    worker = view.known()[0].worker
    view.claim(worker)
    assert keep.idle(now=t + 20) == []  # in flight: not idle, and its clock starts again
    view.release(worker)
    assert keep.idle(now=t + 25) == []
    assert [p.worker.worker_id for p in keep.idle(now=t + 30)] == ["w-1"]


def test_rbee_keep_alive_takes_seconds_minutes_hours_or_never(tmp_path: Path) -> None:
    """300, 5m and 1h are durations, `never` keeps idle workers, anything else is refused."""
    paths = RbeePaths.resolve(tmp_path)

    def keep_alive(raw: str) -> float | None:
        return QueenSettings.build(paths=paths, env={"RBEE_KEEP_ALIVE": raw}).keep_alive_s

    assert QueenSettings.build(paths=paths, env={}).keep_alive_s == KEEP_ALIVE_S
    assert (keep_alive("90"), keep_alive("5m"), keep_alive("1h")) == (90, 300, 3600)
    assert keep_alive("never") is None
    for bad in ("0", "-5", "soon", "nan"):
        with pytest.raises(QueenConfigError, match="RBEE_KEEP_ALIVE"):
            keep_alive(bad)
