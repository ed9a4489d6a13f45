"""Replicas, choices and placement without processes: the wish a queen keeps across a
restart, which idle workers keep_alive must spare, when the queue adds a worker, a
request with `n` choices taking n slots, and spread or pack (RBEE_PLACEMENT)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from jobs import HiveBeat, Infer, ModelServe, RbeePaths, WorkerInfo
from jobs.server import Job, JobLog
from queen._admission import QueueFull
from queen._keepalive import KeepAlive
from queen._memory import Room, roomiest
from queen._replicas import SCALE_UP_AFTER_S
from queen.errors import QueenConfigError
from queen.hives import HiveRegistry
from queen.infer import WorkerPool
from queen.metrics import QueenMetrics
from queen.settings import QueenSettings

pytestmark = pytest.mark.anyio
GIB = 1 << 30


def worker(worker_id: str, *, slots: int = 2, state: str = "ready") -> WorkerInfo:
    port = 9000 + int(worker_id.rsplit("-", 1)[1])
    return WorkerInfo.model_validate(
        {"worker_id": worker_id, "pid": port, "port": port, "url": f"http://127.0.0.1:{port}"}
        | {"model": "tiny", "state": state, "slots": slots}
    )


def pool_with(
    *workers: WorkerInfo, replicas_path: Path | None = None, **options: object
) -> WorkerPool:
    hives = HiveRegistry({}, secret="test-secret")
    beat = HiveBeat(hive_id="a", url="http://a", version="1", workers=list(workers), ts=0)
    hives.beat(beat, now=time.time())
    return WorkerPool(hives, replicas_path=replicas_path, **options)  # type: ignore[arg-type]


def samples(metrics: QueenMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.text().decode())
        for s in family.samples
    }


async def test_the_wish_is_kept_in_the_state_folder_for_the_next_queen(tmp_path: Path) -> None:
    """A wish recorded by one queen is the next one's (same file); 0 replicas forgets it;
    max_replicas below replicas is refused when the operation is read."""
    path = tmp_path / "replicas.json"
    first = pool_with(worker("w-1"), worker("w-2"), replicas_path=path)
    table = await first.replicas.serve(ModelServe(model="tiny", replicas=2, max_replicas=3))
    assert table["served"][0] | {"live": None} == {
        "model": "tiny",
        "replicas": 2,
        "max_replicas": 3,
        "hive_id": None,
        "live": None,
    }
    assert sorted(table["served"][0]["live"]) == ["w-1", "w-2"]  # both count: nothing started
    again = pool_with(replicas_path=path)
    assert [(w.model, w.replicas) for w in again.replicas.wanted.values()] == [("tiny", 2)]
    await again.replicas.serve(ModelServe(model="tiny", replicas=0))
    assert pool_with(replicas_path=path).replicas.wanted == {}
    with pytest.raises(ValidationError, match="max_replicas"):
        ModelServe(model="tiny", replicas=3, max_replicas=2)


async def test_keep_alive_stops_only_the_workers_above_the_replicas() -> None:
    """Three idle workers of a model kept at 2 replicas: keep_alive may stop one of them,
    and none once the wish is 3."""
    pool = pool_with(worker("w-1"), worker("w-2"), worker("w-3"))
    await pool.replicas.serve(ModelServe(model="tiny", replicas=2))
    keep = KeepAlive(pool.view, keep_alive_s=10, spare=pool.replicas.spare)
    now = time.monotonic()
    keep.idle(now=now)
    idle = keep.idle(now=now + 10)
    assert len(idle) == 3
    assert len(pool.replicas.spare(idle)) == 2
    await pool.replicas.serve(ModelServe(model="tiny", replicas=3))
    assert len(pool.replicas.spare(idle)) == 3


async def test_a_queue_that_waits_adds_a_worker_up_to_max_replicas() -> None:
    """One ready worker, kept at 1 replica up to 2: nothing is added while nobody waits;
    a request waiting in the model's queue for SCALE_UP_AFTER_S asks for a second worker,
    never a third."""
    pool = pool_with(worker("w-1"))
    await pool.replicas.serve(ModelServe(model="tiny", replicas=1, max_replicas=2))
    [wanted] = pool.replicas.wanted.values()
    now = time.monotonic()
    assert pool.replicas._target(wanted, now) == 1
    pool.admission.join("tiny")
    assert pool.replicas._target(wanted, now) == 1
    assert pool.replicas._target(wanted, now + SCALE_UP_AFTER_S) == 2
    two = pool_with(worker("w-1"), worker("w-2"))
    await two.replicas.serve(ModelServe(model="tiny", replicas=1, max_replicas=2))
    two.admission.join("tiny")
    [wanted] = two.replicas.wanted.values()
    assert two.replicas._target(wanted, now + 10 * SCALE_UP_AFTER_S) <= 2  # no third


async def test_a_request_with_n_choices_takes_n_slots_of_its_worker() -> None:
    """A 4-slot worker: a request with n=3 leaves room for n=1 but not n=2; one with n=9
    takes the whole worker rather than waiting for ever."""
    pool = pool_with(worker("w-1", slots=4))
    three, two, one = (Infer(prompt="hi", model="tiny", n=n) for n in (3, 2, 1))
    job = Job("j-1", three, JobLog("j-1", lambda log: None))
    pick = await pool.admit(three, job)
    assert pool.free(two) is None and pool.free(one) is not None
    pool.release(three, pick)
    many = Infer(prompt="hi", model="tiny", n=9)
    assert pool.free(many) is not None
    pick = await pool.admit(many, job)
    assert pool.free(one) is None
    pool.release(many, pick)
    assert pool.free(two) is not None


def test_spread_takes_the_hive_with_fewest_replicas_and_pack_the_tightest_fit() -> None:
    """Spread: the hive without a worker of the model first, then the most free memory;
    pack: the least free memory that still fits."""
    rooms = [Room("a", 8 * GIB), Room("b", 3 * GIB), Room("c", GIB)]
    assert roomiest(rooms, 2 * GIB, "m") == Room("a", 8 * GIB)
    assert roomiest(rooms, 2 * GIB, "m", load={"a": 1}) == Room("b", 3 * GIB)
    assert roomiest(rooms, 2 * GIB, "m", placement="pack") == Room("b", 3 * GIB)


def test_rbee_placement_is_spread_or_pack(tmp_path: Path) -> None:
    paths = RbeePaths.resolve(tmp_path)

    def placement(raw: str) -> str:
        return QueenSettings.build(paths=paths, env={"RBEE_PLACEMENT": raw}).placement

    assert QueenSettings.build(paths=paths, env={}).placement == "spread"
    assert (placement("pack"), placement("Spread")) == ("pack", "spread")
    with pytest.raises(QueenConfigError, match="RBEE_PLACEMENT"):
        placement("binpack")


async def test_metrics_show_the_queue_by_model_the_replicas_and_failures_by_reason() -> None:
    """A one-slot worker busy, one request waiting, the next refused: /metrics shows 1
    waiting for tiny and one infer failure `queue_full`; the replicas kept show as
    wanted and live."""
    hives = HiveRegistry({}, secret="test-secret")
    metrics = QueenMetrics(hives)
    pool = pool_with(worker("w-1", slots=1), max_queue=1, metrics=metrics)
    await pool.replicas.serve(ModelServe(model="tiny", replicas=1))
    op = Infer(prompt="hi", model="tiny")

    def job(job_id: str) -> Job:
        return Job(job_id, op, JobLog(job_id, lambda log: None))

    with anyio.fail_after(10):
        first = await pool.admit(op, job("j-1"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.admit, op, job("j-2"))
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(QueueFull):
                await pool.serve(op, job("j-3"))
            now = samples(metrics)
            tg.cancel_scope.cancel()
        pool.release(op, first)
    assert now[("rbee_queue_waiting", frozenset({("model", "tiny")}))] == 1
    assert now[("rbee_infer_failures_total", frozenset({("reason", "queue_full")}))] == 1
    assert now[("rbee_replicas", frozenset({("model", "tiny"), ("kind", "wanted")}))] == 1
    assert now[("rbee_replicas", frozenset({("model", "tiny"), ("kind", "live")}))] == 1
