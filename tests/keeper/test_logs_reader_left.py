"""`keeper queen logs | head -1`: a reader that leaves is not an error for the log printer
either, as for the status tables (tests/e2e/test_output_full.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("json", [False, True])
def test_a_reader_gone_before_the_log_lines_is_not_an_error(keeper, json: bool) -> None:
    """`keeper queen logs` into a pipe whose reader has left: exit 0 and nothing on stderr
    (it said 'unexpected error (BrokenPipeError: …)', exit 1)."""
    logs = keeper.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "queen.log").write_text("".join(f"line {i}\n" for i in range(10)))
    read, write = os.pipe()
    os.close(read)  # the reader has left before the keeper writes a byte
    try:
        result = subprocess.run(
            [sys.executable, "-m", "keeper", *(["--json"] if json else []), "queen", "logs"],
            env=keeper.env(),
            stdout=write,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (0, "")
