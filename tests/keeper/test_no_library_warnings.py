"""No keeper command shows a third-party library's warning to its user."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HIVES = '[hives.h1]\nhost = "127.0.0.1"\nuser = "rbee"\n'


def _hive_status(rbee_home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`keeper hive status h1` for a hive over SSH: it imports asyncssh, which warns under
    cryptography 48+ ("DSA is deprecated")."""
    import os

    (rbee_home / "config").mkdir(exist_ok=True)
    (rbee_home / "config" / "hives.toml").write_text(HIVES)
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run(
        [sys.executable, "-m", "keeper", "hive", "status", "h1"],
        env={**environ, "RBEE_HOME": str(rbee_home), **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_an_ssh_command_prints_its_sentence_and_no_library_warning(rbee_home: Path) -> None:
    """The SSH command ends in its one sentence; asyncssh's deprecation notice, which the
    same command shows when the user asks Python for warnings, is not on screen."""
    asked = _hive_status(rbee_home, PYTHONWARNINGS="default")
    assert "CryptographyDeprecationWarning" in asked.stderr  # the command does import it
    plain = _hive_status(rbee_home)
    assert plain.returncode != 0
    assert "Warning" not in plain.stderr and "warn" not in plain.stderr.lower()
    assert plain.stderr.startswith("keeper: ") and plain.stderr.count("\n") == 1
