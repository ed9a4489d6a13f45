"""`keeper run -- sh -c 'yes | cat' | head -1`: a command run through a shell reports the
SIGPIPE its pipeline died of as exit code 141, not as a signal; the reader leaving is
still said quietly, as for `keeper run -- yes` (tests/keeper/test_run_argv.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def test_a_shell_whose_pipeline_met_sigpipe_ends_quietly_with_141() -> None:
    """The reader leaves; sh exits 141 after its `cat` died of SIGPIPE: keeper exits 141
    with no sentence (it said "keeper: sh -c 'yes | cat' exited with code 141")."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "keeper", "run", "--", "sh", "-c", "yes | cat"],
        env={**os.environ, "NO_COLOR": "1"},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE
    assert "keeper:" not in err and "Traceback" not in err, err
