"""`keeper hive install` builds the wheels here and installs them on the remote with no index."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.ssh import ALIAS, Remote

INSTALL_TIMEOUT_S = 600.0  # building the wheelhouse and a full offline pip install


@pytest.mark.slow
def test_install_then_start_runs_the_installed_hive(
    keeper: Any, remote: Remote, rbee_home: Path, tmp_path: Path
) -> None:
    """install narrates each step with pip's output relayed from the remote, leaves a venv
    whose rbee-hive `hive start` then runs, healthy, from that venv."""
    venv = tmp_path / "remote-venv"
    remote.write_hives_config(rbee_home, venv=str(venv), python="/usr/bin/python3")
    installed = keeper("--json", "hive", "install", ALIAS, timeout=INSTALL_TIMEOUT_S)
    assert installed.returncode == 0, installed.stderr[-3000:]
    events = [json.loads(line) for line in installed.stdout.splitlines()]
    steps = [e["action"] for e in events if e.get("actor") == "keeper"]
    assert steps == ["build", "copy", "venv", "pip_install", "installed"]
    remote_pip = [
        e for e in events if e.get("actor") == "pip" and e.get("origin") == f"ssh:{ALIAS}"
    ]
    assert any("Successfully installed" in e.get("human", "") for e in remote_pip)
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import hive, llama_cpp, keeper"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr

    started = keeper("--json", "hive", "start", ALIAS)
    try:
        assert started.returncode == 0, started.stderr
        record = json.loads(remote.pidfile.read_text())
        assert record["argv"][0] == f"{venv}/bin/rbee-hive"
    finally:
        assert keeper("hive", "stop", ALIAS).returncode == 0
