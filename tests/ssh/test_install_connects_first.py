"""`keeper hive install` checks the SSH connection before it builds a single wheel."""

from __future__ import annotations

import json
import time
from typing import Any

import asyncssh
import pytest

from tests.support.ssh import ALIAS, Remote

# Keeper start-up plus an SSH handshake; building the wheelhouse takes 20 s and more.
FAIL_FAST_S = 5.0


@pytest.mark.parametrize("known", ["unknown", "changed"])
def test_a_host_key_problem_fails_install_before_any_wheel_is_built(
    keeper: Any, remote: Remote, known: str
) -> None:
    """A host missing from known_hosts, or offering another key than the one there, ends
    `hive install` in one sentence (exit 3) within seconds, with no build step narrated
    and no pip output: the connection is checked first."""
    other = asyncssh.generate_private_key("ssh-ed25519")
    remote.known_hosts.write_text("" if known == "unknown" else remote.sshd.known_hosts_line(other))
    began = time.monotonic()
    result = keeper("--json", "hive", "install", ALIAS, timeout=60)
    took = time.monotonic() - began
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert remote.sshd.host_key.get_fingerprint() in result.stderr
    assert ("not in" if known == "unknown" else "CHANGED") in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert not [e for e in events if e.get("action") == "build" or e.get("actor") == "pip"]
    assert took < FAIL_FAST_S, f"install took {took:.1f} s to refuse the host key"
