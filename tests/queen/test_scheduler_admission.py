"""The admission queue's rules, without processes: fair order, the bound, Retry-After."""

from __future__ import annotations

import anyio
import pytest

from jobs import JobError
from queen._admission import RETRY_AFTER_S, Admission, QueueFull


def test_requests_are_served_in_the_order_they_came() -> None:
    """Each ticket sees how many wait before it, and moves up as the ones before it leave."""
    admission = Admission(max_queue=8)
    first, second, third = (admission.join("tiny") for _ in range(3))
    assert [admission.ahead(t) for t in (first, second, third)] == [0, 1, 2]
    admission.leave(first)
    assert [admission.ahead(t) for t in (second, third)] == [0, 1]
    admission.leave(third)  # a cancelled request frees its place too
    assert admission.ahead(second) == 0 and admission.waiting("tiny") == 1


def test_a_full_queue_refuses_with_503_and_a_retry_after() -> None:
    """Past `max_queue` waiting requests one more is refused as a 503 with a Retry-After
    in seconds and a sentence naming the model; other models have queues of their own."""
    admission = Admission(max_queue=2)
    admission.join("tiny")
    admission.join("tiny")
    with pytest.raises(QueueFull) as refused:
        admission.join("tiny")
    error = refused.value
    assert isinstance(error, JobError) and error.status == 503
    assert RETRY_AFTER_S[0] <= error.retry_after <= RETRY_AFTER_S[1]
    assert error.detail["retry_after"] == error.retry_after
    assert "tiny" in str(error) and "RBEE_MAX_QUEUE" in str(error)
    assert admission.ahead(admission.join("smollm2")) == 0
    assert admission.statistics() == {"tiny": 2, "smollm2": 1}


def test_a_request_a_worker_refused_goes_back_to_the_head() -> None:
    """A request that had its turn and got the worker's 503 rejoins at the front, even
    when the queue is full: it keeps its turn rather than losing it or failing."""
    admission = Admission(max_queue=1)
    waiting = admission.join("tiny")
    again = admission.join("tiny", front=True)
    assert admission.ahead(again) == 0 and admission.ahead(waiting) == 1


def test_retry_after_grows_with_the_queue_and_shrinks_with_slots() -> None:
    """The guess is the queue ahead shared among the slots, at the model's average time."""
    admission = Admission(max_queue=64)
    admission.record("tiny", 4.0)
    assert admission.retry_after("tiny") == 4
    for _ in range(3):
        admission.join("tiny")
    assert admission.retry_after("tiny") == 16
    assert admission.retry_after("tiny", slots=4) == 4
    admission.record("tiny", 1000.0)
    assert admission.retry_after("tiny") == RETRY_AFTER_S[1]


@pytest.mark.anyio
async def test_leaving_wakes_the_requests_that_wait() -> None:
    """A waiting request wakes as soon as the one before it leaves, not at its next look."""
    admission = Admission()
    head = admission.join("tiny")
    woke = anyio.Event()

    async def wait() -> None:
        await admission.wait("tiny", timeout_s=60)
        woke.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            admission.leave(head)
            await woke.wait()


def test_a_queue_bound_below_one_is_refused() -> None:
    """Admission(0) would refuse every waiting request: it is a usage error."""
    with pytest.raises(ValueError, match="at least 1"):
        Admission(0)
