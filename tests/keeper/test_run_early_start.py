"""`keeper run` starts its command before it has loaded its relay and renderers: what a
user must not notice about that (nothing lost or reordered, Ctrl-C honoured, a child
with the usual signal mask). Real keeper processes around real children."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support import all_gone, wait_until

DEADLINE_S = 30.0  # seconds any single wait may take on a slow 2-core machine
KEEPER = [sys.executable, "-m", "keeper"]
# More than the keeper holds in memory while loading (narration_core._early.HOLD_MAX,
# 1 MiB): the child then waits on its pipe, and every line still arrives once, in order.
MANY_LINES = 120_000
FLOOD = f"""
import sys
for i in range({MANY_LINES}):
    print(f"line {{i:06d}} " + "x" * 48)
    if i % 40_000 == 0:
        print(f"err {{i}}", file=sys.stderr)
"""


def test_every_line_printed_while_the_keeper_loads_arrives_once_in_order() -> None:
    result = subprocess.run(
        [*KEEPER, "run", "--", sys.executable, "-c", FLOOD],
        capture_output=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.decode().splitlines() if line.startswith("line ")]
    assert lines == [f"line {i:06d} " + "x" * 48 for i in range(MANY_LINES)]
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("err ")]
    assert errors == ["err 0", "err 40000", "err 80000"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_right_after_the_start_stops_the_tree(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """The command signals it runs; the signal sent at once (the keeper is most likely
    still loading) is acted on as any other: said, the tree stopped, exit 130."""
    started = tmp_path / "started"
    keeper = subprocess.Popen(
        [*KEEPER, "run", "--", "sh", "-c", f"touch {started}; sleep 7201"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until(started.exists, "the command to start")
        tree = psutil.Process(keeper.pid).children(recursive=True)
        keeper.send_signal(sig)
        _, stderr = keeper.communicate(timeout=DEADLINE_S)
        assert keeper.returncode == 130, stderr
        assert b"stopping" in stderr and b"keeper: interrupted" in stderr
        assert all_gone([p.pid for p in tree])
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()


def test_the_command_starts_with_no_signal_blocked() -> None:
    """The keeper holds stop signals while it loads; its command must not inherit that
    (a child with SIGINT blocked would ignore the user's Ctrl-C)."""
    probe = "import signal; print('blocked', sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))"
    result = subprocess.run(
        [*KEEPER, "run", "--", sys.executable, "-c", probe],
        capture_output=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "blocked []" in result.stdout.decode().splitlines()
