"""The pool's admission without processes: a worker with one slot, requests beyond it
waiting in order and saying where they are, and the bound on how many may wait."""

from __future__ import annotations

import time

import anyio
import pytest

from jobs import HiveBeat, Infer, WorkerInfo
from jobs.server import Job, JobLog
from narration_core import capture_narration
from queen._admission import QueueFull
from queen._workers import Pick
from queen.hives import HiveRegistry
from queen.infer import WorkerPool

pytestmark = pytest.mark.anyio

PROMPT = Infer(prompt="hi", model="tiny")


def pool_with_one_worker(*, max_queue: int) -> WorkerPool:
    worker = WorkerInfo.model_validate(
        {"worker_id": "w-1", "pid": 7, "port": 9001, "url": "http://127.0.0.1:9001"}
        | {"model": "tiny", "state": "ready", "slots": 1}
    )
    hives = HiveRegistry({}, secret="test-secret")
    hives.beat(
        HiveBeat(hive_id="a", url="http://a", version="1", workers=[worker], ts=0), now=time.time()
    )
    return WorkerPool(hives, max_queue=max_queue)


def job(job_id: str) -> Job:
    return Job(job_id, PROMPT, JobLog(job_id, lambda log: None))


async def test_requests_beyond_the_free_slots_wait_in_order_and_say_where_they_are() -> None:
    """The first request takes the slot at once; the next two wait, first come first
    served, each told its place ('0 ahead', '1 ahead', then '0 ahead' as the line moves)
    and marked ready so their clients follow them; one more than the bound is refused."""
    pool = pool_with_one_worker(max_queue=2)
    served: list[tuple[str, Pick]] = []
    second, third = job("j-2"), job("j-3")

    async def wait(one: Job) -> None:
        served.append((one.id, await pool.admit(PROMPT, one)))

    with capture_narration() as captured, anyio.fail_after(10):
        first = await pool.admit(PROMPT, job("j-1"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, second)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(wait, third)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(QueueFull) as refused:
                await pool.admit(PROMPT, job("j-4"))
            assert refused.value.retry_after >= 1
            assert second.ready.is_set() and third.ready.is_set()
            assert served == []
            pool.release(PROMPT, first)
            while len(served) < 1:
                await anyio.wait_all_tasks_blocked()
            assert served[0][0] == "j-2" and pool.free(PROMPT) is None
            pool.release(PROMPT, served[0][1])
    assert [name for name, _ in served] == ["j-2", "j-3"]
    places = [e.human.rsplit(": ", 1)[1] for e in captured.events if e.action == "queued"]
    assert places == ["0 ahead", "1 ahead", "0 ahead"]
