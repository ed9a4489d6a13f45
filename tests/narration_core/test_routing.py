"""Routing follows context: stdout always, job sinks for events with a job."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from narration_core import (
    NarrationEvent,
    Narrator,
    narration_context,
    register_job_sink,
)

NARRATE = Narrator("test")


def test_no_job_goes_to_stdout_only(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a job the event is one narration line on stdout and reaches no job sink."""
    seen: list[NarrationEvent] = []
    unregister = register_job_sink("some-job", seen.append)
    try:
        NARRATE.action("hello").human("world").emit()
    finally:
        unregister()
    assert capsys.readouterr().out == "[test      ] hello          : world\n"
    assert seen == []


def test_job_event_goes_to_stdout_and_its_sink(capsys: pytest.CaptureFixture[str]) -> None:
    """Inside a job the event is on stdout and in that job's sink."""
    seen: list[NarrationEvent] = []
    unregister = register_job_sink("job-1", seen.append)
    try:
        with narration_context(job_id="job-1"):
            NARRATE.action("step").human("one").emit()
    finally:
        unregister()
    assert capsys.readouterr().out == "[test      ] step           : one\n"
    assert [(e.action, e.human, e.job_id) for e in seen] == [("step", "one", "job-1")]


@pytest.mark.anyio
async def test_concurrent_jobs_each_get_only_their_own_events() -> None:
    """Ten concurrent tasks with different jobs: every job sink sees only its own events."""
    sinks: dict[str, list[NarrationEvent]] = {f"job-{i}": [] for i in range(10)}
    unregisters = [register_job_sink(job, events.append) for job, events in sinks.items()]

    async def work(job: str) -> None:
        async with narration_context(job_id=job):
            for n in range(20):
                NARRATE.action("tick").human(f"{job} {n}").emit()
                await anyio.lowlevel.checkpoint()

    try:
        async with anyio.create_task_group() as tg:
            for job in sinks:
                tg.start_soon(work, job)
    finally:
        for unregister in unregisters:
            unregister()
    for job, events in sinks.items():
        assert [e.human for e in events] == [f"{job} {n}" for n in range(20)]
        assert {e.job_id for e in events} == {job}


def test_unknown_job_never_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """Emitting into a job nobody registered still prints and raises nothing."""
    with narration_context(job_id="nobody-knows-me"):
        NARRATE.action("lost").human("still printed").emit()
    assert "still printed" in capsys.readouterr().out


def test_raising_sink_is_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    """A sink that raises does not break emit, other sinks, or stdout."""
    seen: list[NarrationEvent] = []

    def broken(event: NarrationEvent) -> None:
        raise RuntimeError("sink is broken")

    unregisters = [register_job_sink("j", broken), register_job_sink("j", seen.append)]
    try:
        with narration_context(job_id="j"):
            NARRATE.action("a").human("first").emit()
            NARRATE.action("a").human("second").emit()
    finally:
        for unregister in unregisters:
            unregister()
    out, err = capsys.readouterr()
    assert out.count("[test      ] a") == 2
    assert [e.human for e in seen] == ["first", "second"]
    assert err.count("sink is broken") == 1


def test_full_sink_never_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    """A sink whose bounded buffer is full refuses fast; emit neither blocks nor fails."""
    send, receive = anyio.create_memory_object_stream[NarrationEvent](1)
    unregister = register_job_sink("full", send.send_nowait)
    try:
        with narration_context(job_id="full"):
            for i in range(3):
                NARRATE.action("a").human(f"line {i}").emit()
    finally:
        unregister()
        send.close()
    assert receive.receive_nowait().human == "line 0"
    receive.close()
    assert capsys.readouterr().out.count("line ") == 3


def test_unregistered_sink_receives_nothing_more() -> None:
    """After unregistering, a job sink sees no further events."""
    seen: list[NarrationEvent] = []
    unregister = register_job_sink("j2", seen.append)
    with narration_context(job_id="j2"):
        NARRATE.action("a").human("before").emit()
        unregister()
        NARRATE.action("a").human("after").emit()
    assert [e.human for e in seen] == ["before"]
