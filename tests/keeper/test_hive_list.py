"""`keeper hive list` lists hives, not every Host of the user's SSH config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support import closed_hive_url

WAIT_S = 60.0  # a keeper command on a loaded 2-core machine


def _keeper(keeper: Any, ssh_config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`keeper ARGS` reading `ssh_config` as the SSH config (RBEE_SSH_CONFIG)."""
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        env={**keeper.env(), "RBEE_SSH_CONFIG": str(ssh_config)},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        stdin=subprocess.DEVNULL,
    )


def test_hive_list_shows_configured_hives_not_ssh_hosts(
    keeper: Any, tmp_path: Path, free_tcp_port: int
) -> None:
    """With `Host github.com` and `Host lab-box` in the SSH config and gpu1 in the hives
    config, `hive list` shows localhost and gpu1 (then the queen's hives), neither SSH
    host; an SSH config Host is still a target for `hive start` (here it is reached over
    SSH and refuses the connection: exit 3, where an unknown alias is a usage error)."""
    refusing = urlsplit(closed_hive_url()).port
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host github.com\n  User git\nHost lab-box\n  HostName 127.0.0.1\n  Port {refusing}\n"
    )
    config = keeper.home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hives.toml").write_text('[hives.gpu1]\nhost = "192.0.2.10"\nuser = "rbee"\n')
    assert keeper("queen", "start", "--port", str(free_tcp_port)).returncode == 0
    try:
        listed = _keeper(keeper, ssh_config, "hive", "list")
    finally:
        assert keeper("queen", "stop").returncode == 0
    assert listed.returncode == 0, listed.stderr
    assert "localhost: this machine (local)" in listed.stdout
    assert "gpu1: ssh rbee@192.0.2.10, hive port 7835 (hives config)" in listed.stdout
    assert "github.com" not in listed.stdout and "lab-box" not in listed.stdout
    assert "hive_list" in listed.stdout  # the queen's own list follows

    ssh_host = _keeper(keeper, ssh_config, "hive", "start", "lab-box")
    assert ssh_host.returncode == 3, ssh_host.stderr
    assert "cannot reach lab-box over SSH" in ssh_host.stderr
    unknown = _keeper(keeper, ssh_config, "hive", "start", "nowhere")
    assert unknown.returncode == 2, unknown.stderr
