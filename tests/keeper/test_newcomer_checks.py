"""What a newcomer's first commands met (garbled errors, tracebacks, wrong hints), fixed and
proved through the real keeper CLI."""

from __future__ import annotations

import subprocess
import sys

WAIT_S = 30.0  # deadline for a keeper command on a loaded 2-core machine


def _keeper_with_home(keeper, home: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`keeper ARGS` with RBEE_HOME set to `home` (the fixture's runner sets its own)."""
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        env={**keeper.env(), "RBEE_HOME": home},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        stdin=subprocess.DEVNULL,
    )


def test_a_message_of_several_lines_keeps_its_newlines(keeper) -> None:
    """The sample `[hives.gpu1]` entry an unknown hive's error shows prints as lines, not
    joined by replacement characters."""
    result = keeper("hive", "start", "gpu1")
    assert result.returncode == 2, result.stderr
    assert "\n[hives.gpu1]\n" in result.stderr
    assert "\ufffd" not in result.stderr
