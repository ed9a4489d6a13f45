"""Hives on other "machines" for split tests: network namespaces, each with its own
address, its own sshd and a veth to this namespace (where the queen and the worker's
hive run), and real hives started in them.

    with peer_machines(tmp_path, ["b", "c"]) as (b, c):
        async with hive_at(queen, b.home, "boxb", b.ip, *b.prefix, env=...) as hive: ...

A namespace's hive beats to a queen listening on any namespace's `host_ip` (each
namespace routes through its veth to this one), and is reached at its own `ip`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobs import HIVE_CREDENTIAL_ENV, RbeePaths, cluster_secret, hive_credential
from jobs.client import JobClient
from tests.support._chain import BEAT_S
from tests.support._jobs import run_job
from tests.support._programs import RunningProgram, spawn_program, url_of
from tests.support._waiting import await_until, wait_until

SSHD = "/usr/sbin/sshd"
HIVE_DEADLINE_S = 60.0  # a hive to beat: a loaded 2-core box lags

LISTENERS = """
import json, psutil
found = []
for c in psutil.net_connections("tcp"):
    if c.status == psutil.CONN_LISTEN:
        try:
            cmd = " ".join(psutil.Process(c.pid).cmdline()) if c.pid else ""
        except psutil.Error:
            cmd = ""
        found.append([c.pid, c.laddr.ip, c.laddr.port, cmd])
print(json.dumps(found))
"""


@dataclass(frozen=True)
class Queen:
    """Where the test's queen listens, its token (None on loopback) and its RBEE_HOME."""

    url: str
    token: str | None
    home: Path


@dataclass(frozen=True)
class Machine:
    """A peer "machine": namespace `ns` at address `ip`, this namespace's end of the veth
    between them (`host_ip`), an RBEE_HOME for its hive, and its sshd's authorized_keys
    and host key line (for the worker's hive's known_hosts)."""

    ns: str
    ip: str
    host_ip: str
    home: Path
    authorized_keys: Path
    known_hosts_line: str

    @property
    def prefix(self) -> tuple[str, ...]:
        """The command prefix that runs a program in this machine's namespace."""
        return ("ip", "netns", "exec", self.ns)


def rbee_lines(authorized_keys: Path) -> list[str]:
    """The link grants rbee wrote into an authorized_keys file."""
    return [line for line in authorized_keys.read_text().splitlines() if "rbee-rpc-link:" in line]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def listeners(ns: str) -> list[tuple[int | None, str, int, str]]:
    """(pid, address, port, command line) of every TCP listener in namespace `ns`."""
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", LISTENERS],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [tuple(entry) for entry in json.loads(done.stdout)]


def _sshd_listens(ns: str) -> bool:
    return any(port == 22 for _, _, port, _ in listeners(ns))


@dataclass(frozen=True)
class HomeSshd:
    """An sshd of this namespace on one machine's `host_ip`:22, as that machine reaches
    this one: its authorized_keys and the known_hosts line of its host key."""

    authorized_keys: Path
    known_hosts_line: str


@contextlib.contextmanager
def home_sshd(folder: Path, machine: Machine) -> Iterator[HomeSshd]:
    """An sshd in this namespace listening on `machine`'s `host_ip` (port 22), killed
    after: for a split whose worker runs on `machine` and links back to a hive here."""
    sshd, line = _start_sshd(folder, None, machine.host_ip)
    try:
        wait_until(
            lambda: any(
                port == 22 and address == machine.host_ip
                for _, address, port, _ in listeners_here()
            ),
            "this namespace's sshd",
        )
        yield HomeSshd(folder / "authorized_keys", line)
    finally:
        sshd.kill()
        sshd.wait(timeout=10)


def listeners_here() -> list[tuple[int | None, str, int, str]]:
    """(pid, address, port, command line) of every TCP listener in this namespace."""
    done = subprocess.run(
        [sys.executable, "-c", LISTENERS], check=True, capture_output=True, text=True, timeout=60
    )
    return [tuple(entry) for entry in json.loads(done.stdout)]


def _start_sshd(folder: Path, ns: str | None, ip: str) -> tuple[subprocess.Popen[bytes], str]:
    """sshd in `ns` (None: this namespace) on `ip`:22, key auth only, reading
    `folder/authorized_keys`; with the known_hosts line of its host key."""
    import asyncssh

    folder.mkdir(parents=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    host_key.write_private_key(str(folder / "host_ed25519"))
    (folder / "host_ed25519").chmod(0o600)
    authorized = folder / "authorized_keys"
    authorized.write_text("")
    (folder / "sshd_config").write_text(
        f"Port 22\nListenAddress {ip}\nHostKey {folder / 'host_ed25519'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    prefix = ["ip", "netns", "exec", ns] if ns is not None else []
    sshd = subprocess.Popen(
        [*prefix, SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return sshd, f"{ip} {host_key.export_public_key().decode().strip()}\n"


@contextlib.contextmanager
def peer_machines(tmp_path: Path, names: Sequence[str]) -> Iterator[list[Machine]]:
    """One namespace per name, each linked to this one by a veth (its own /24, a default
    route back through it), each with its sshd listening on its address; everything in
    them is killed and they are deleted after. Skips, saying why, where namespaces cannot
    be made (not root, no iproute2 or openssh-server)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if not Path(SSHD).exists() or shutil.which("ip") is None:
        pytest.skip(f"needs {SSHD} and iproute2's ip (apt-get install openssh-server iproute2)")
    tag = os.getpid() % 250
    made: list[tuple[str, str]] = []  # (namespace, veth) to remove
    daemons: list[subprocess.Popen[bytes]] = []
    machines: list[Machine] = []
    try:
        for n, name in enumerate(names):
            ns, veth, net = f"rbsplit{tag}{name}", f"rbs{tag}{name}", f"10.{82 + n}.{tag}"
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"cannot make a network namespace here ({exc.stderr.decode().strip()})")
            made.append((ns, veth))
            _ip("link", "add", veth, "type", "veth", "peer", "name", veth + "p")
            _ip("link", "set", veth + "p", "netns", ns)
            _ip("addr", "add", f"{net}.1/24", "dev", veth)
            _ip("link", "set", veth, "up")
            for args in (
                ("addr", "add", f"{net}.2/24", "dev", veth + "p"),
                ("link", "set", veth + "p", "up"),
                ("link", "set", "lo", "up"),
                ("route", "add", "default", "via", f"{net}.1"),
            ):
                _ip("netns", "exec", ns, "ip", *args)
            sshd, host_line = _start_sshd(tmp_path / f"{name}-sshd", ns, f"{net}.2")
            daemons.append(sshd)
            authorized = tmp_path / f"{name}-sshd" / "authorized_keys"
            machines.append(
                Machine(ns, f"{net}.2", f"{net}.1", tmp_path / name, authorized, host_line)
            )
        for machine in machines:
            wait_until(functools.partial(_sshd_listens, machine.ns), f"{machine.ns}'s sshd")
        yield machines
    finally:
        for ns, _ in made:
            found = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in found.stdout.split():
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for sshd in daemons:
            sshd.kill()
            sshd.wait(timeout=10)
        for ns, veth in made:
            subprocess.run(["ip", "link", "del", veth], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


async def queen_call(queen: Queen, operation: dict[str, Any]) -> Any:
    """Run one operation on the queen; its result (the job must complete)."""
    async with JobClient(queen.url, token=queen.token) as client:
        events = await run_job(client, operation)
    assert events[-1].data["state"] == "completed", events[-1].data
    return events[-1].data["result"]


@contextlib.asynccontextmanager
async def hive_at(
    queen: Queen,
    home: Path,
    hive_id: str,
    bind: str,
    *prefix: str,
    beat_to: str | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[RunningProgram]:
    """A real rbee-hive `hive_id` listening on `bind`, run through `prefix` (e.g. `ip
    netns exec NS`), beating to `beat_to` (default the queen's URL); yields once the queen
    lists it."""
    credential = hive_credential(cluster_secret(RbeePaths.resolve(queen.home).ensure()), hive_id)
    argv = [*prefix, sys.executable, "-m", "hive", "--port", "0", "--bind", bind]
    argv += ["--queen-url", beat_to or queen.url, "--hive-id", hive_id]
    argv += ["--beat-interval", f"{BEAT_S:g}"]
    env = {HIVE_CREDENTIAL_ENV: credential, **(env or {})}
    async with spawn_program(argv, home=home, ready=url_of("ready"), env=env) as hive:

        async def known() -> bool:
            hives = (await queen_call(queen, {"operation": "queen_status"}))["hives"]
            return any(h["hive_id"] == hive_id and h["url"] == hive.url for h in hives)

        await await_until(known, deadline_s=HIVE_DEADLINE_S)
        yield hive
