"""Output that cannot be written (a full disk) is one sentence and exit 1, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import pathlib, sys
for i in range(20000):
    print(f"[queen-rbee] tick           : step {i}")
pathlib.Path(sys.argv[1]).write_text("done")
"""


@pytest.mark.parametrize("flags", [[], ["--json"]], ids=["plain", "json"])
def test_a_full_disk_under_stdout_ends_in_one_sentence_after_the_command_ran(
    tmp_path: Path, flags: list[str]
) -> None:
    """`keeper run ... > /dev/full` (every write fails with ENOSPC) lets the command run to
    its end, then says the output was dropped and why, and exits 1."""
    done = tmp_path / "done"
    env = {**os.environ, "NO_COLOR": "1"}
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "keeper", *flags, "run", "--",
             sys.executable, "-c", CHILD, str(done)],
            stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert done.read_text() == "done"  # the command was not cut short
    assert "could not write the output (No space left on device)" in result.stderr
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr
