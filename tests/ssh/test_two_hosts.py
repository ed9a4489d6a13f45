"""Two hives on two "machines" (network namespaces, each with its own sshd and address),
reached by alias over SSH, both beating to one queen; cutting one link stales only it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port
from tests.support.ssh import SSHD, Sshd

TOKEN = "two-hosts-test-token"  # the queen's and each hive's token (beyond loopback)
BEAT_S = 1.0  # the hives' beat interval: stale after three missed (a loaded box lags 1 s)
DEADLINE_S = 60.0  # workers load llama.cpp on a shared 2-core machine


@dataclass
class Namespace:
    name: str
    alias: str
    veth: str  # the interface on the root side: down cuts the link
    host_ip: str  # the root namespace's end (the queen's address as the hive sees it)
    ip: str  # the "machine's" address
    home: Path
    sshd: subprocess.Popen[bytes] | None = None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def two_hosts(sshd: Sshd, tmp_path: Path, rbee_home: Path) -> Iterator[list[Namespace]]:
    """Two namespaces with a veth link each, an sshd in each on its own address."""
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root (CI runs as root)")
    tag = f"{os.getpid() % 10000}"
    spaces = [
        Namespace(
            f"rbee{tag}n{i}",
            f"box{i}",
            f"rb{tag}v{i}",
            f"10.{77 + i}.{int(tag) % 250}.1",
            f"10.{77 + i}.{int(tag) % 250}.2",
            tmp_path / f"box{i}-home",
        )
        for i in (1, 2)
    ]
    try:
        for ns in spaces:
            _ip("netns", "add", ns.name)
            _ip("link", "add", ns.veth, "type", "veth", "peer", "name", ns.veth + "p")
            _ip("link", "set", ns.veth + "p", "netns", ns.name)
            _ip("addr", "add", f"{ns.host_ip}/24", "dev", ns.veth)
            _ip("link", "set", ns.veth, "up")
            for args in (
                ("addr", "add", f"{ns.ip}/24", "dev", ns.veth + "p"),
                ("link", "set", ns.veth + "p", "up"),
                ("link", "set", "lo", "up"),
            ):
                _ip("netns", "exec", ns.name, "ip", *args)
            config = tmp_path / f"{ns.name}.sshd_config"
            config.write_text(
                (sshd.folder / "sshd_config")
                .read_text()
                .replace(f"Port {sshd.port}", "Port 22")
                .replace("ListenAddress 127.0.0.1", f"ListenAddress {ns.ip}")
                .replace("sshd.pid", f"{ns.name}.pid")
            )
            ns.sshd = subprocess.Popen(
                ["ip", "netns", "exec", ns.name, SSHD, "-D", "-e", "-f", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        yield spaces
    finally:
        for ns in spaces:
            _kill_namespace(ns.name)
            if ns.sshd is not None:
                ns.sshd.kill()  # already killed with the namespace, unless it never got in
                ns.sshd.wait(timeout=10)
            subprocess.run(["ip", "link", "del", ns.veth], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


def _kill_namespace(name: str) -> None:
    """SIGKILL what this test started in the namespace (its sshd, hive and workers)."""
    found = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in found.stdout.split():
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _keeper(rbee_home: Path, env: dict[str, str], *args: str, timeout: float = 120.0) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        env={**env, "RBEE_HOME": str(rbee_home), "RBEE_TOKEN": TOKEN, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _hives(rbee_home: Path, env: dict[str, str], queen: str) -> dict[str, Any]:
    status = _keeper(rbee_home, env, "--json", "--queen-url", queen, "status")
    assert status.returncode == 0, status.stderr
    final = [json.loads(line) for line in status.stdout.splitlines()][-1]
    return {h["hive_id"]: h for h in final["result"]["hives"]}


def _wait(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _configure(
    sshd: Sshd, spaces: list[Namespace], rbee_home: Path, tmp_path: Path, *, queen_port: int | None
) -> dict[str, str]:
    """known_hosts, SSH config and hives config for the namespaces; the keeper's env.
    `queen_port` None leaves queen_url out of the hives config."""
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir()
    (ssh_dir / "known_hosts").write_text(
        "".join(f"{ns.ip} {sshd.host_key.export_public_key().decode().strip()}\n" for ns in spaces)
    )
    (ssh_dir / "config").write_text(
        "".join(
            f"Host {ns.alias}\n  HostName {ns.ip}\n  User root\n"
            f"  IdentityFile {sshd.user_key_path}\n"
            for ns in spaces
        )
    )
    config = rbee_home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hives.toml").write_text(
        "".join(
            f'[hives.{ns.alias}]\nhost = "{ns.alias}"\nhome = "{ns.home}"\nvenv = "{sys.prefix}"\n'
            + (f'queen_url = "http://{ns.host_ip}:{queen_port}"\n' if queen_port else "")
            + f'token = "{TOKEN}"\n'
            f'bind = "{ns.ip}"\n'
            for ns in spaces
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "RBEE_QUEEN_URL")}
    env |= {
        "RBEE_SSH_CONFIG": str(ssh_dir / "config"),
        "RBEE_KNOWN_HOSTS": str(ssh_dir / "known_hosts"),
    }
    return env


@pytest.mark.slow
def test_two_hives_in_two_namespaces_and_one_link_cut(
    sshd: Sshd, two_hosts: list[Namespace], rbee_home: Path, tmp_path: Path
) -> None:
    """Each namespace's hive starts by alias over its own sshd, the queen sees both and
    spawns a worker on each; cutting one link makes only that hive stale."""
    queen_port = free_port()
    env = _configure(sshd, two_hosts, rbee_home, tmp_path, queen_port=queen_port)
    queen = f"http://127.0.0.1:{queen_port}"
    started = _keeper(
        rbee_home, env, "queen", "start", "--port", str(queen_port), "--bind", "0.0.0.0"
    )
    assert started.returncode == 0, started.stderr
    try:
        for ns in two_hosts:
            hive = _keeper(
                rbee_home,
                env,
                "--queen-url",
                queen,
                "hive",
                "start",
                ns.alias,
                "--beat-interval",
                str(BEAT_S),
            )
            assert hive.returncode == 0, hive.stderr
            assert f"ready at http://{ns.ip}:" in hive.stdout
        _wait(
            lambda: all(h in _hives(rbee_home, env, queen) for h in ("box1", "box2")),
            "both hives to beat",
        )
        for ns in two_hosts:
            for args in (
                ("model", "download", "builtin:tiny", "--hive", ns.alias),
                (
                    "worker",
                    "spawn",
                    "--model",
                    "builtin:tiny",
                    "--hive",
                    ns.alias,
                    "--no-autostart",
                ),
            ):
                done = _keeper(rbee_home, env, "--queen-url", queen, *args)
                assert done.returncode == 0, (args, done.stderr)
        _wait(
            lambda: all(
                len(h["workers"]) == 1
                for h in _hives(rbee_home, env, queen).values()
                if h["hive_id"] in ("box1", "box2")
            ),
            "a worker on each hive in its beats",
        )
        for ns in two_hosts:  # the queen sends prompts to the workers in the namespaces
            answer = _keeper(
                rbee_home, env, "--queen-url", queen, "infer", "--model", "builtin:tiny",
                "--hive", ns.alias, "--no-autostart", "--seed", "3", "--max-tokens", "8",
                "the hive",
            )  # fmt: skip
            assert answer.returncode == 0, (ns.alias, answer.stderr[-2000:])
            assert answer.stdout.strip(), (ns.alias, answer.stderr[-2000:])

        _ip("link", "set", two_hosts[0].veth, "down")
        _wait(lambda: _hives(rbee_home, env, queen)["box1"]["stale"], "box1 to go stale")
        assert not _hives(rbee_home, env, queen)["box2"]["stale"]
    finally:
        _keeper(rbee_home, env, "--queen-url", queen, "queen", "stop")


def test_a_loopback_queen_url_for_a_remote_hive_is_warned_about(
    sshd: Sshd, two_hosts: list[Namespace], rbee_home: Path, tmp_path: Path
) -> None:
    """A hive on another machine told to beat to the keeper's loopback queen URL (no
    queen_url configured): the start warns that this is that machine itself."""
    env = _configure(sshd, two_hosts, rbee_home, tmp_path, queen_port=None)
    queen = f"http://127.0.0.1:{free_port()}"
    started = _keeper(rbee_home, env, "--queen-url", queen, "hive", "start", "box1")
    assert started.returncode == 0, started.stderr
    assert f"Hive box1 will beat to {queen}, which on box1 is that machine itself" in (
        started.stdout
    )
    assert "set queen_url" in started.stdout
    assert _keeper(rbee_home, env, "hive", "stop", "box1").returncode == 0
