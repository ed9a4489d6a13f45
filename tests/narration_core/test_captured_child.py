"""A captured child flushes each event, so its parent sees lines as they happen."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap

from narration_core import CAPTURE_ENV, parse_line

CHILD = textwrap.dedent(
    """
    import sys
    from narration_core import Narrator
    n = Narrator("child")
    n.action("first").human("before waiting").emit()
    sys.stdin.readline()          # blocks until the parent answers
    n.action("second").human("after waiting").emit()
    """
)


def _spawn(*, captured: bool) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop(CAPTURE_ENV, None)
    # PYTHONUNBUFFERED would hide the bug this guards against: a block-buffered pipe.
    env.pop("PYTHONUNBUFFERED", None)
    if captured:
        env[CAPTURE_ENV] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )


def test_parent_reads_each_line_before_the_child_exits() -> None:
    """With the capture variable set, the first event arrives while the child still runs."""
    with _spawn(captured=True) as child:
        assert child.stdin is not None and child.stdout is not None
        # A buffering child would print nothing until it exits, and it never exits here.
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child's first event did not arrive while it was running"
        first = child.stdout.readline()
        assert child.poll() is None
        event = parse_line(first)
        assert event is not None and (event.actor, event.action) == ("child", "first")
        child.stdin.write("go\n")
        child.stdin.flush()
        second = parse_line(child.stdout.readline())
        assert second is not None and second.human == "after waiting"
        assert child.wait(timeout=30) == 0
