"""`keeper hive start|status|logs|stop` against a hive on a machine reached over real SSH."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psutil

from tests.support.ssh import ALIAS, Remote


def test_start_streams_remote_startup_and_the_hive_outlives_the_keeper(
    keeper: Any, remote: Remote
) -> None:
    """`hive start` relays the remote hive's startup narration (origin ssh:<alias>) until
    healthy, exits, and the hive keeps running; status, logs and stop then work over SSH."""
    started = keeper("--json", "hive", "start", ALIAS)
    assert started.returncode == 0, started.stderr
    events = [json.loads(line) for line in started.stdout.splitlines()]
    hive = [(e["action"], e.get("origin")) for e in events if e.get("actor") == "rbee-hive"]
    assert ("startup", f"ssh:{ALIAS}") in hive and ("ready", f"ssh:{ALIAS}") in hive
    assert events[-1]["actor"] == "keeper" and events[-1]["action"] == "ready"
    url = f"http://127.0.0.1:{remote.hive_port}/health"
    assert httpx.get(url, timeout=5).status_code == 200  # the keeper has exited
    # The pidfile names rbee-hive itself (not a shell around it): stopping that pid stops
    # the hive, and no orphan keeps beating while `hive status` says "not running".
    pid = json.loads(remote.pidfile.read_text())["pid"]
    listening = {c.laddr.port for c in psutil.Process(pid).net_connections("inet")}
    assert remote.hive_port in listening
    assert "hive" in " ".join(psutil.Process(pid).cmdline())

    status = keeper("hive", "status", ALIAS)
    assert status.returncode == 0 and "is running" in status.stdout, status.stderr
    again = keeper("hive", "start", ALIAS)
    assert again.returncode == 0 and "already running" in again.stdout, again.stderr
    logs = keeper("hive", "logs", ALIAS)
    assert logs.returncode == 0 and f"Hive {ALIAS} starting" in logs.stdout, logs.stderr

    stopped = keeper("hive", "stop", ALIAS)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    try:
        httpx.get(url, timeout=2)
        raise AssertionError("the hive still answers after hive stop")
    except httpx.TransportError:
        pass
    gone = keeper("hive", "status", ALIAS)
    assert gone.returncode == 3 and "not running" in gone.stderr  # as a stopped local hive


def test_hive_list_shows_configured_hives_not_ssh_config_hosts(
    keeper: Any, remote: Remote, free_tcp_port: int
) -> None:
    """`hive list` names localhost and the hives config entry, each with its source, before
    the queen's own list; a Host found only in the SSH config is no hive and is not listed."""
    remote.ssh_config.write_text(
        remote.ssh_config.read_text() + "\nHost other-box\n  HostName 192.0.2.7\nHost *\n"
    )
    assert keeper("queen", "start", "--port", str(free_tcp_port)).returncode == 0
    try:
        listed = keeper("hive", "list")
    finally:
        keeper("queen", "stop")
    assert listed.returncode == 0, listed.stderr
    assert "localhost: this machine (local)" in listed.stdout
    assert f"{ALIAS}: ssh {ALIAS}, hive port {remote.hive_port} (hives config)" in listed.stdout
    assert "other-box" not in listed.stdout and "(ssh config)" not in listed.stdout
    assert "Host *" not in listed.stdout and "*:" not in listed.stdout
