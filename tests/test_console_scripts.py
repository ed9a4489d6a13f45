"""Every program the distribution installs starts and explains itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = ["keeper", "rbee-keeper", "queen-rbee", "rbee-hive", "llm-worker-rbee"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_console_script_shows_help(script: str) -> None:
    """Each console script is installed next to this Python and answers --help with exit 0."""
    path = shutil.which(script, path=str(Path(sys.executable).parent))
    assert path is not None, f"{script} is not installed; run `pip install -e .`"
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
