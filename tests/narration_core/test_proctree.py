"""Stopping a daemon's tree (`proctree.stop_tree`) with real processes: the daemon hears
SIGTERM first and stops its own children; what it leaves behind is stopped after it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from narration_core.proctree import stop_tree

DEADLINE_S = 20.0  # the tree's Python processes starting on a busy machine

# A child in its own session (as a hive's worker is) that notes each SIGTERM it hears
# and, unless told to ignore it, takes half a second to stop gracefully, as a worker
# finishing its jobs does.
CHILD = """
import signal, sys, time
log, ignore = sys.argv[1], sys.argv[2] == "ignore"
stopping = []
def heard(signum, frame):
    with open(log, "a") as f:
        f.write("TERM\\n")
    if not ignore and not stopping:
        stopping.append(time.monotonic() + 0.5)
signal.signal(signal.SIGTERM, heard)
open(log + ".ready", "w").close()
while not stopping or time.monotonic() < stopping[0]:
    time.sleep(0.02)
"""

# The daemon: starts CHILD in a new session; on SIGTERM it stops the child itself and
# waits for it ("forward"), leaves it running ("leave"), or ignores SIGTERM ("ignore").
LEADER = """
import signal, subprocess, sys, time
child_code, log, mode = sys.argv[1], sys.argv[2], sys.argv[3]
child = subprocess.Popen(
    [sys.executable, "-c", child_code, log, "ignore" if mode == "ignore" else "exit"],
    start_new_session=True,
)
def on_term(signum, frame):
    if mode == "forward":
        child.terminate()
        child.wait()
    if mode != "ignore":
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
while True:
    time.sleep(0.05)
"""


Tree = tuple[Path, list[subprocess.Popen[bytes]]]  # the child's log; what the test started


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    started: list[subprocess.Popen[bytes]] = []
    yield tmp_path / "child.log", started
    for proc in started:  # a failed test must not leave processes behind
        for member in [*_children(proc.pid), proc]:
            member.kill()


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _start(
    log: Path, started: list[subprocess.Popen[bytes]], mode: str
) -> tuple[psutil.Process, list[psutil.Process]]:
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER, textwrap.dedent(CHILD), str(log), mode],
        start_new_session=True,
    )
    started.append(leader)
    deadline = time.monotonic() + DEADLINE_S
    while not Path(str(log) + ".ready").exists():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)
    process = psutil.Process(leader.pid)
    return process, process.children(recursive=True)


def _gone(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


def test_a_daemon_that_stops_its_own_children_is_not_second_guessed(tree: Tree) -> None:
    """The daemon forwards SIGTERM to its session-escaped child and waits for it: the
    child hears one SIGTERM (the daemon's), not a second one from the stop."""
    log, started = tree
    leader, children = _start(log, started, "forward")
    result = stop_tree(leader, grace=DEADLINE_S)
    assert not result.killed
    assert _gone([leader, *children])
    assert log.read_text() == "TERM\n"


def test_what_a_daemon_leaves_behind_is_stopped_after_it(tree: Tree) -> None:
    """The daemon exits on SIGTERM and leaves its child running: the stop then sends the
    child SIGTERM itself, and the whole tree is gone well within the grace period."""
    log, started = tree
    leader, children = _start(log, started, "leave")
    result = stop_tree(leader, grace=DEADLINE_S)
    assert not result.killed and result.seconds < DEADLINE_S / 2
    assert _gone([leader, *children])
    assert log.read_text() == "TERM\n"


def test_a_tree_that_ignores_sigterm_is_killed_after_the_grace_period(tree: Tree) -> None:
    """Daemon and child both ignore SIGTERM: after the grace period everything is killed."""
    log, started = tree
    leader, children = _start(log, started, "ignore")
    result = stop_tree(leader, grace=1.0)
    assert result.killed and result.seconds >= 1.0
    assert _gone([leader, *children])
