"""The job context follows work into tasks and threads."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from narration_core import (
    Narrator,
    capture_narration,
    clear_job_context,
    current_job_id,
    narration_context,
    set_job_context,
)

NARRATE = Narrator("test")


def test_no_context_means_no_job() -> None:
    """Outside any context an event carries no job id (stdout only)."""
    assert current_job_id() is None
    assert NARRATE.action("x").human("y").emit().job_id is None


def test_with_block_sets_and_restores_the_job() -> None:
    """`with narration_context` routes into the job and nesting restores the outer one."""
    with narration_context(job_id="outer"):
        assert NARRATE.action("a").human("1").emit().job_id == "outer"
        with narration_context(job_id="inner", trace_id="c"):
            event = NARRATE.action("b").human("2").emit()
            assert (event.job_id, event.trace_id) == ("inner", "c")
        assert current_job_id() == "outer"
    assert current_job_id() is None


def test_builder_job_id_wins_over_the_context() -> None:
    """An explicit `.job_id()` on the builder beats the job in context."""
    with narration_context(job_id="ctx"):
        assert NARRATE.action("a").human("x").job_id("explicit").emit().job_id == "explicit"


def test_set_and_clear_job_context() -> None:
    """set_job_context/clear_job_context switch the job for the rest of the context."""
    token = set_job_context("j")
    try:
        assert current_job_id() == "j"
        clear_job_context()
        assert current_job_id() is None
    finally:
        from narration_core.context import _JOB_ID

        _JOB_ID.reset(token)


@pytest.mark.anyio
async def test_async_with_and_create_task_inherit_the_job() -> None:
    """A task made with asyncio.create_task inside `async with` narrates into the job."""
    with capture_narration() as seen:
        async with narration_context(job_id="job-task"):
            task = asyncio.get_running_loop().create_task(_narrate_async("from task"))
        await task
    assert [(e.human, e.job_id) for e in seen.events] == [("from task", "job-task")]


@pytest.mark.anyio
async def test_anyio_task_group_inherits_the_job() -> None:
    """Tasks started in an anyio task group inside the context narrate into the job."""
    with capture_narration() as seen:
        async with narration_context(job_id="job-tg"), anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(_narrate_async, f"child {i}")
    assert sorted(e.human for e in seen.events) == ["child 0", "child 1", "child 2"]
    assert {e.job_id for e in seen.events} == {"job-tg"}


@pytest.mark.anyio
async def test_to_thread_inherits_the_job() -> None:
    """Blocking work sent through anyio.to_thread.run_sync narrates into the job."""
    with capture_narration() as seen:
        async with narration_context(job_id="job-thread"):
            await anyio.to_thread.run_sync(lambda: NARRATE.action("t").human("in thread").emit())
    assert [(e.human, e.job_id) for e in seen.events] == [("in thread", "job-thread")]


async def _narrate_async(text: str) -> None:
    await anyio.lowlevel.checkpoint()
    NARRATE.action("t").human(text).emit()
