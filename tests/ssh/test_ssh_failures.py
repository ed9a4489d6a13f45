"""Each SSH failure gives one clear sentence and exit 3; nothing prompts, nothing hangs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncssh
import psutil

from tests.support.ssh import ALIAS, Remote

FAIL_FAST_S = 30.0  # a refused connection or key is answered in well under a second


def _assert_one_sentence_exit_3(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for part in parts:
        assert part in result.stderr, result.stderr


def test_unknown_host_names_its_fingerprint_and_the_flag_which_stores_it(
    keeper: Any, remote: Remote
) -> None:
    """A host missing from known_hosts is refused naming its fingerprint and
    --accept-new-host-key; with the flag it connects and the key is stored for next time."""
    remote.known_hosts.write_text("")
    refused = keeper("hive", "status", ALIAS, timeout=FAIL_FAST_S)
    fingerprint = remote.sshd.host_key.get_fingerprint()
    _assert_one_sentence_exit_3(
        refused, fingerprint, "--accept-new-host-key", f"[127.0.0.1]:{remote.sshd.port}"
    )
    accepted = keeper("hive", "status", ALIAS, "--accept-new-host-key", timeout=FAIL_FAST_S)
    assert accepted.returncode == 3 and "not running" in accepted.stderr, accepted.stderr
    assert remote.known_hosts.read_text() == remote.sshd.known_hosts_line()
    again = keeper("hive", "status", ALIAS, timeout=FAIL_FAST_S)
    assert again.returncode == 3 and "not running" in again.stderr, again.stderr


def test_a_changed_host_key_is_refused_even_with_the_flag(keeper: Any, remote: Remote) -> None:
    """known_hosts holding another key for the host: refused as CHANGED, flag or not, and
    known_hosts is left as it was."""
    other = asyncssh.generate_private_key("ssh-ed25519")
    remote.known_hosts.write_text(remote.sshd.known_hosts_line(other))
    for extra in ((), ("--accept-new-host-key",)):
        result = keeper("hive", "status", ALIAS, *extra, timeout=FAIL_FAST_S)
        _assert_one_sentence_exit_3(result, "CHANGED", remote.sshd.host_key.get_fingerprint())
    assert remote.known_hosts.read_text() == remote.sshd.known_hosts_line(other)


def test_a_key_the_server_refuses_fails_without_a_prompt(
    keeper: Any, remote: Remote, tmp_path: Path
) -> None:
    """A user key the sshd does not authorise: exit 3 saying the keys were refused, no
    password prompt (stdin is closed and the server offers only keys), no hang."""
    wrong = tmp_path / "wrong_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(wrong))
    wrong.chmod(0o600)
    remote.write_ssh_config(identity=wrong)
    began = time.monotonic()
    result = keeper("hive", "start", ALIAS, timeout=FAIL_FAST_S)
    _assert_one_sentence_exit_3(result, "refused every SSH key", "authorized_keys")
    assert time.monotonic() - began < FAIL_FAST_S
    assert not remote.pidfile.exists()


def test_an_unreachable_host_is_named(keeper: Any, remote: Remote, rbee_home: Path) -> None:
    """Nothing listening on the SSH port: exit 3 naming the host and what to check."""
    with socket.socket() as sock:  # a port that was free a moment ago refuses connections
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    remote.ssh_config.write_text(
        remote.ssh_config.read_text().replace(f"Port {remote.sshd.port}", f"Port {closed}")
    )
    result = keeper("hive", "start", ALIAS, timeout=FAIL_FAST_S)
    _assert_one_sentence_exit_3(result, f"cannot reach {ALIAS}", "sshd runs")


def test_a_missing_venv_points_at_hive_install(
    keeper: Any, remote: Remote, rbee_home: Path, tmp_path: Path
) -> None:
    """A remote without rbee installed: exit 3 naming the missing program and
    `keeper hive install ALIAS`."""
    remote.write_hives_config(rbee_home, venv=str(tmp_path / "no-venv"))
    result = keeper("hive", "start", ALIAS, timeout=FAIL_FAST_S)
    _assert_one_sentence_exit_3(result, "no-venv/bin/rbee-hive is missing", "keeper hive install")


def test_a_hive_that_fails_to_start_shows_its_last_lines(
    keeper: Any, remote: Remote, rbee_home: Path, tmp_path: Path
) -> None:
    """The remote hive exits before it is healthy: exit 3 saying how it ended, its last
    lines relayed with origin ssh:<alias>, and no pidfile left behind."""
    venv = tmp_path / "broken-venv"
    (venv / "bin").mkdir(parents=True)
    broken = venv / "bin" / "rbee-hive"
    broken.write_text(
        "#!/bin/sh\necho '[rbee-hive ] startup        : Hive testhive starting'\n"
        "echo 'rbee-hive: cannot load the catalog (disk full)'\nexit 2\n"
    )
    broken.chmod(0o755)
    remote.write_hives_config(rbee_home, venv=str(venv))
    result = keeper("--json", "hive", "start", ALIAS, timeout=60.0)
    _assert_one_sentence_exit_3(result, "failed to start", "exited with code 2")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    relayed = [
        (e.get("actor"), e.get("human")) for e in events if e.get("origin") == f"ssh:{ALIAS}"
    ]
    assert ("rbee-hive", "Hive testhive starting") in relayed
    assert ("rbee-hive", "rbee-hive: cannot load the catalog (disk full)") in relayed
    assert not remote.pidfile.exists()


def test_a_dropped_connection_ends_logs_follow_clearly(keeper: Any, remote: Remote) -> None:
    """`hive logs -f` whose sshd session is killed: exit 3 saying the connection dropped,
    promptly (no wait for keepalives)."""
    started = keeper("hive", "start", ALIAS)
    assert started.returncode == 0, started.stderr
    try:
        follower = subprocess.Popen(
            [sys.executable, "-m", "keeper", "hive", "logs", "-f", ALIAS],
            env=keeper.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert follower.stdout is not None
            first = follower.stdout.readline()  # the log is printing: the session is up
            assert first, "hive logs -f printed nothing"
            sessions = psutil.Process(remote.sshd.process.pid).children()
            assert sessions, "no sshd session serves the follower"
            for session in sessions:  # only the follower is connected now
                session.kill()
            _, err = follower.communicate(timeout=FAIL_FAST_S)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
        assert follower.returncode == 3, err
        assert "dropped while following" in err and "Traceback" not in err
    finally:
        assert keeper("hive", "stop", ALIAS).returncode == 0


def test_a_hive_healthy_there_but_unreachable_from_here_says_what_to_fix(
    keeper: Any, remote: Remote, rbee_home: Path
) -> None:
    """The hive answers /health on its own machine but not at the URL the keeper probes:
    exit 3 saying so and naming bind, firewall and hive_port/url; the hive is stopped."""
    with socket.socket() as sock:  # an address nothing answers on, as a firewalled port
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    remote.write_hives_config(rbee_home, url=f"http://127.0.0.1:{closed}")
    result = keeper("hive", "start", ALIAS, "--timeout", "8", timeout=60.0)
    _assert_one_sentence_exit_3(
        result, f"answers on {ALIAS} itself", "not reachable from here", "bind", "firewall"
    )
    assert not remote.pidfile.exists()
    status = keeper("hive", "status", ALIAS)
    assert status.returncode == 3 and "not running" in status.stderr
