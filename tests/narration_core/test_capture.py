"""ProcessNarrationCapture against real child processes."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import psutil
import pytest

from narration_core import (
    NarrationEvent,
    add_observer,
    format_line,
    register_job_sink,
    set_stdout_sink,
)
from narration_core.capture import CapturedProcess, ProcessNarrationCapture
from tests.support import all_gone, await_until

pytestmark = pytest.mark.anyio

DEADLINE_S = 20  # generous: CI machines here have 2 cores


class Seen:
    """Every event emitted during a test, with a way to wait for one that matches."""

    def __init__(self) -> None:
        self.events: list[NarrationEvent] = []
        self._changed = anyio.Event()

    def __call__(self, event: NarrationEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, match: Callable[[NarrationEvent], bool]) -> NarrationEvent:
        with anyio.fail_after(DEADLINE_S):
            while True:
                for event in self.events:
                    if match(event):
                        return event
                self._changed = anyio.Event()
                await self._changed.wait()

    def humans(self, stream: str | None = "stdout") -> list[str]:
        return [e.human for e in self.events if e.stream == stream]


@pytest.fixture
def seen() -> Iterator[Seen]:
    """Observe every event while the real stdout sink is silenced."""
    recorder = Seen()
    previous = set_stdout_sink(lambda event: None)
    remove = add_observer(recorder)
    try:
        yield recorder
    finally:
        remove()
        set_stdout_sink(previous)


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


async def run_to_end(argv: list[str], **kwargs: object) -> int:
    proc = await ProcessNarrationCapture(**kwargs).spawn(argv)  # type: ignore[arg-type]
    async with proc:
        with anyio.fail_after(DEADLINE_S):
            return await proc.wait()


async def wait_gone(pids: list[int]) -> None:
    await await_until(lambda: all_gone(pids), deadline_s=DEADLINE_S)


async def test_line_arrives_while_child_still_runs(tmp_path: Path, seen: Seen) -> None:
    """A captured child's narration reaches the parent before the child exits."""
    release = tmp_path / "release"
    argv = script(
        tmp_path,
        f"""
        import os, time
        from narration_core import narrate
        assert os.environ["RBEE_NARRATION_CAPTURED"] == "1"
        narrate("child", "hello", "waiting for release")
        while not os.path.exists({str(release)!r}):
            time.sleep(0.01)
        """,
    )
    proc = await ProcessNarrationCapture().spawn(argv)
    async with proc, anyio.create_task_group() as tg:
        tg.start_soon(proc.wait)
        event = await seen.wait_for(lambda e: e.action == "hello")
        assert proc.returncode is None
        assert (event.actor, event.human, event.origin) == (
            "child",
            "waiting for release",
            f"pid {proc.pid}",
        )
        release.touch()
    assert proc.returncode == 0


async def test_partial_last_line_is_delivered(tmp_path: Path, seen: Seen) -> None:
    """A last line without a newline is relayed when the child exits."""
    argv = script(tmp_path, "import sys; sys.stdout.write('first\\nno newline at end')")
    assert await run_to_end(argv) == 0
    assert seen.humans() == ["first", "no newline at end"]


async def test_huge_line_arrives_whole_in_bounded_pieces(tmp_path: Path, seen: Seen) -> None:
    """A 10 MB line without a newline arrives complete, in pieces no longer than max_line."""
    argv = script(tmp_path, "import sys; sys.stdout.write('é' + 'y' * 10_000_000)")
    assert await run_to_end(argv, max_line=65536) == 0
    pieces = seen.humans()
    assert len(pieces) > 100
    assert max(map(len, pieces)) <= 65536
    assert "".join(pieces) == "é" + "y" * 10_000_000


async def test_invalid_utf8_is_replaced(tmp_path: Path, seen: Seen) -> None:
    """Bytes that are not UTF-8 become U+FFFD instead of breaking the reader."""
    argv = script(tmp_path, "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end\\n')")
    assert await run_to_end(argv) == 0
    assert seen.humans() == ["ok \ufffd\ufffd end"]


async def test_control_sequences_neutralised_raw_kept(tmp_path: Path, seen: Seen) -> None:
    """Escape sequences are removed from `human` but kept, JSON-escaped, in fields.raw."""
    argv = script(
        tmp_path,
        r"""
        print("\x1b]0;owned\x07title")
        print("[queen-rbee] start          : \x1b[2Jcleared")
        """,
    )
    assert await run_to_end(argv) == 0
    output, narration = seen.events
    assert output.human == "title" and narration.human == "cleared"
    assert narration.actor == "queen-rbee"
    for event in (output, narration):
        assert "\x1b" not in event.human
        assert "\\u001b" in event.to_json()
        assert "\x1b" in event.fields["raw"]


async def test_stderr_relayed_with_stream_name(tmp_path: Path, seen: Seen) -> None:
    """Plain stderr lines become output events named after the stream and the program."""
    argv = script(tmp_path, "import sys; sys.stderr.write('diagnostic\\n')")
    assert await run_to_end(argv, actor="tool") == 0
    (event,) = seen.events
    assert (event.actor, event.action, event.human, event.stream) == (
        "tool",
        "output",
        "diagnostic",
        "stderr",
    )


TREE_CHILD = """
import os, signal, subprocess, sys, time
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
stubborn = [sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('armed', flush=True); time.sleep(600)"]
in_group = subprocess.Popen(sleeper)
escaped = subprocess.Popen(sleeper, start_new_session=True)
deaf = subprocess.Popen(stubborn, stdout=subprocess.PIPE)
deaf.stdout.readline()
print("tree", in_group.pid, escaped.pid, deaf.pid, flush=True)
time.sleep(600)
"""


async def start_tree(tmp_path: Path, seen: Seen) -> tuple[CapturedProcess, list[int]]:
    capture = ProcessNarrationCapture(grace=0.5)
    proc = await capture.spawn(script(tmp_path, TREE_CHILD))
    return proc, [proc.pid]


async def test_stop_kills_whole_tree(tmp_path: Path, seen: Seen) -> None:
    """aclose() stops the child, its group, a grandchild that left the group and one
    that ignores SIGTERM."""
    proc, pids = await start_tree(tmp_path, seen)
    async with anyio.create_task_group() as tg:
        tg.start_soon(proc.wait)
        ready = await seen.wait_for(lambda e: e.human.startswith("tree "))
        pids += [int(p) for p in ready.human.split()[1:]]
        await proc.aclose()
    assert proc.returncode is not None and proc.returncode < 0
    await wait_gone(pids)
    assert any(e.action == "kill" and e.level == "warn" for e in seen.events)


async def test_cancelled_parent_leaves_no_orphan_or_zombie(tmp_path: Path, seen: Seen) -> None:
    """Cancelling wait() mid-read stops the whole tree and reaps the child."""
    proc, pids = await start_tree(tmp_path, seen)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(proc.wait)
            ready = await seen.wait_for(lambda e: e.human.startswith("tree "))
            pids += [int(p) for p in ready.human.split()[1:]]
            scope.cancel()
    assert scope.cancelled_caught
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(proc.pid)  # reaped, not a zombie
    await wait_gone(pids)


async def test_last_words_relayed_when_parent_is_cancelled(tmp_path: Path, seen: Seen) -> None:
    """What the child prints while it stops (its SIGTERM handler) still reaches the parent."""
    argv = script(
        tmp_path,
        """
        import signal, sys, time
        from narration_core import narrate
        def stop(*_):
            narrate("child", "stopping", "got SIGTERM, cleaning up")
            narrate("child", "stopped", "bye")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        narrate("child", "ready", "up")
        while True:
            time.sleep(1)
        """,
    )
    proc = await ProcessNarrationCapture().spawn(argv)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(proc.wait)
            await seen.wait_for(lambda e: e.action == "ready")
            scope.cancel()
    assert proc.returncode == 0
    assert [e.action for e in seen.events if e.actor == "child"] == ["ready", "stopping", "stopped"]


async def test_narration_reemitted_into_parent_job(tmp_path: Path, seen: Seen) -> None:
    """A child's narration lands in the sink of the capture's job, actor and message kept."""
    received: list[NarrationEvent] = []
    unregister = register_job_sink("job-7", received.append)
    try:
        argv = script(
            tmp_path, "from narration_core import narrate; narrate('rbee-hive', 'spawn', 'w1 up')"
        )
        assert await run_to_end(argv, job_id="job-7") == 0
    finally:
        unregister()
    (event,) = received
    assert (event.actor, event.action, event.human, event.job_id) == (
        "rbee-hive",
        "spawn",
        "w1 up",
        "job-7",
    )
    assert event.origin is not None and event.origin.startswith("pid ")


async def test_without_job_line_is_unchanged(tmp_path: Path, seen: Seen) -> None:
    """Without a job, the re-emitted event formats to exactly the line the child printed."""
    line = format_line(NarrationEvent("llm-worker-rbee", "model_load", "loaded [x] y: z\nin 3 s"))
    argv = script(tmp_path, f"print({line!r})")
    assert await run_to_end(argv) == 0
    (event,) = seen.events
    assert format_line(event) == line
    assert event.job_id is None and event.stream is None


async def test_missing_program_raises_at_spawn(tmp_path: Path) -> None:
    """A program that does not exist fails at spawn with FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        await ProcessNarrationCapture().spawn([str(tmp_path / "no-such-program")])


async def test_cancel_during_spawn_stops_the_child(seen: Seen) -> None:
    """A cancel that lands while the child is being spawned raises out of spawn() with
    the child already stopped: nothing runs on, nothing hangs."""
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    children: list[int] = []

    async def cancel_once_forked(scope: anyio.CancelScope) -> None:
        while not children:  # the fork is synchronous: look once per event-loop turn
            children.extend(p.pid for p in me.children() if p.pid not in before)
            await anyio.lowlevel.checkpoint()
        scope.cancel()

    with anyio.fail_after(DEADLINE_S):
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:
                tg.start_soon(cancel_once_forked, scope)
                proc = await ProcessNarrationCapture().spawn(["sleep", "7401"])
                async with proc:  # only reached if spawn() ignored the cancel
                    pytest.fail("spawn() returned a process after it was cancelled")
    assert scope.cancelled_caught
    await wait_gone(children)
