"""What a newcomer's first commands met (garbled errors, tracebacks, wrong hints), fixed and
proved through the real keeper CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_rbee_home_that_is_a_file_is_a_usage_error(keeper, tmp_path: Path) -> None:
    """RBEE_HOME naming a file says so in one sentence and exits 2, no traceback."""
    not_a_folder = tmp_path / "f"
    not_a_folder.touch()
    for args in (("status",), ("queen", "start"), ("run", "--", "true")):
        result = _keeper_with_home(keeper, str(not_a_folder), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert f"RBEE_HOME {not_a_folder} is not a folder" in result.stderr, args
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unexpected_error_is_one_line_without_v(keeper) -> None:
    """An error nobody foresaw (the queen's pidfile is a folder) is one line naming its type,
    exit 1; -v adds the traceback."""
    (keeper.home / "run" / "queen.pid").mkdir(parents=True)
    result = keeper("status")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("keeper: unexpected error (IsADirectoryError: ")
    assert "run again with -v to see where" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    verbose = keeper("-v", "status")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr
    assert "keeper: unexpected error (IsADirectoryError: " in verbose.stderr
