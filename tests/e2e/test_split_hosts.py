"""A split whose peer hive is on another machine: the worker's hive reaches the peer's
RPC server (on the peer's 127.0.0.1) through an SSH local forward to the peer's sshd,
with rbee's own link key, which the peer granted for that one port and revokes once the
split unloads. No RPC socket listens beyond loopback.

Two set-ups: two hives on this machine's loopback under different addresses (127.0.0.1
and 127.0.0.2: different URL hosts, so the queen links them over SSH) with a test sshd,
which runs everywhere; and two network namespaces, each a "machine" with its own sshd
and address, where the host allows them (root, `ip netns`). What the link key may not do
(no shell, no command, no sftp, no other port) is proven against a real sshd in
tests/hive/test_rpc_link.py.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncssh
import psutil
import pytest

from jobs import HIVE_CREDENTIAL_ENV, RbeePaths, cluster_secret, hive_credential
from jobs.client import JobClient
from tests.support import (
    BEAT_S,
    LinkSshd,
    RunningProgram,
    await_until,
    free_port,
    link_sshd,
    queen_with_hive,
    run_job,
    spawn_program,
    spawn_queen,
    stop_the_only_worker,
    url_of,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
TINY_LENT = "512KiB"  # less than builtin:tiny needs with 4096 tokens x 2 slots (~780 KiB)
SSHD = "/usr/sbin/sshd"
DEADLINE_S = 60.0  # a hive to beat, a split to unload: a loaded 2-core box lags
TOKEN = "split-hosts-test-token"  # the queen's and the namespaced hives' (beyond loopback)


def rbee_lines(authorized_keys: Path) -> list[str]:
    return [line for line in authorized_keys.read_text().splitlines() if "rbee-rpc-link:" in line]


async def infer_tiny(jobs: JobClient) -> list[Any]:
    events = await run_job(
        jobs,
        {"operation": "infer", "model": "builtin:tiny", "prompt": "the hive", "seed": 3,
         "max_tokens": 8},
    )  # fmt: skip
    assert events[-1].data["state"] == "completed", events[-1].data
    assert any(e.kind == "token" for e in events)
    return events


@dataclass(frozen=True)
class Queen:
    """Where the test's queen listens, its token (None on loopback) and its RBEE_HOME."""

    url: str
    token: str | None
    home: Path


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

        await await_until(known, deadline_s=DEADLINE_S)
        yield hive


async def queen_call(queen: Queen, operation: dict[str, Any]) -> Any:
    async with JobClient(queen.url, token=queen.token) as client:
        events = await run_job(client, operation)
    assert events[-1].data["state"] == "completed", events[-1].data
    return events[-1].data["result"]


def write_hives_config(rbee_home: Path, entries: dict[str, dict[str, object]]) -> None:
    config = rbee_home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hives.toml").write_text(
        "".join(
            f"[hives.{hive_id}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
            for hive_id, keys in entries.items()
        )
    )


@contextlib.contextmanager
def peer_sshd(tmp_path: Path) -> Iterator[LinkSshd]:
    """The peer "machine"'s sshd on 127.0.0.1 (skips without openssh-server)."""
    if not Path(SSHD).exists():
        pytest.skip(f"{SSHD} is missing (apt-get install openssh-server)")
    (tmp_path / "sshd").mkdir()
    with link_sshd(tmp_path / "sshd", free_port()) as sshd:
        yield sshd


async def test_tiny_split_over_an_ssh_link_between_two_loopback_addresses(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """builtin:tiny split between a hive on 127.0.0.1 and one on 127.0.0.2 answers through
    the queen over an SSH link; the peer's grant names its server's port; when the peer's
    sshd dies the worker is stopped naming the peer, and the grant goes."""
    with peer_sshd(tmp_path) as sshd:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(sshd.known_hosts_line)
        monkeypatch.setenv("RBEE_LEND_MEMORY", TINY_LENT)
        monkeypatch.setenv("RBEE_KNOWN_HOSTS", str(known_hosts))
        monkeypatch.setenv("RBEE_AUTHORIZED_KEYS", str(sshd.authorized_keys))
        # Whichever hive lends, its "machine's" sshd is the test's.
        link = {"link_host": "127.0.0.1", "link_port": sshd.port}
        write_hives_config(rbee_home, {"localhost": link, "gpu2": link})
        async with (
            queen_with_hive(rbee_home) as (queen, _),
            hive_at(
                Queen(queen.url, None, rbee_home), tmp_path / "gpu2", "gpu2", "127.0.0.2"
            ) as worker_hive,
            JobClient(queen.url) as jobs,
        ):
            for hive_id in ("localhost", "gpu2"):
                fetched = await run_job(
                    jobs,
                    {"operation": "model_download", "model": "builtin:tiny", "hive_id": hive_id},
                )
                assert fetched[-1].data["state"] == "completed", fetched[-1].data
            events = await infer_tiny(jobs)
            said = " ".join(str(e.data.get("human", "")) for e in events)
            assert "splitting it by layers" in said
            user = getpass.getuser()  # the peer hive's, whose authorized_keys it is
            assert f"over SSH ({user}@127.0.0.1:{sshd.port}, forward to its 127.0.0.1:" in said
            assert "Granted an SSH forward to 127.0.0.1:" in said
            assert "Linked 127.0.0.1:" in said
            (granted,) = rbee_lines(sshd.authorized_keys)
            assert 'permitopen="127.0.0.1:' in granted and 'command="false"' in granted

            # The peer's machine goes away (sshd and its connections killed): the worker's
            # hive stops the worker, naming the peer; the queen then releases the peer,
            # which revokes the grant.
            sshd.kill()
            await await_until(lambda: _no_workers(queen.url), deadline_s=DEADLINE_S)
            said = "".join(worker_hive.lines)
            assert ": the RPC link to peer localhost (" in said, said[-3000:]
            await anyio.to_thread.run_sync(
                lambda: wait_until(
                    lambda: not rbee_lines(sshd.authorized_keys), "the peer to revoke the grant"
                )
            )


async def _no_workers(queen_url: str) -> bool:
    async with JobClient(queen_url) as client:
        status = await run_job(client, {"operation": "queen_status"})
    return not status[-1].data["result"]["workers"]


async def test_a_split_across_machines_without_a_known_sshd_is_refused_in_one_sentence(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's hive on 127.0.0.2, its peer `localhost` on 127.0.0.1 with no link_host:
    the queen cannot tell the worker's hive where that peer's sshd is, and says what to
    set, before anything starts."""
    monkeypatch.setenv("RBEE_LEND_MEMORY", TINY_LENT)
    async with (
        queen_with_hive(rbee_home) as (queen, _),
        hive_at(Queen(queen.url, None, rbee_home), tmp_path / "gpu2", "gpu2", "127.0.0.2"),
        JobClient(queen.url) as jobs,
    ):
        for hive_id in ("localhost", "gpu2"):
            fetched = await run_job(
                jobs, {"operation": "model_download", "model": "builtin:tiny", "hive_id": hive_id}
            )
            assert fetched[-1].data["state"] == "completed", fetched[-1].data
        events = await run_job(
            jobs, {"operation": "infer", "model": "builtin:tiny", "prompt": "x", "max_tokens": 2}
        )
        final = events[-1].data
        assert final["state"] == "failed", final
        error = str(final)
        assert "set link_host (and link_port) under [hives." in error, error
        assert "Lending this hive's memory" not in " ".join(
            str(e.data.get("human", "")) for e in events
        )


# --- two machines: network namespaces ------------------------------------------------

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


@dataclass
class Machine:
    """The peer's namespace: its address (`ip`) and this namespace's end of the veth
    between them (`host_ip`, where the queen listens)."""

    ns: str
    ip: str
    host_ip: str
    home: Path


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
    return [tuple(entry) for entry in json.loads(done.stdout)]  # type: ignore[misc]


def tree_listeners(pid: int) -> set[str]:
    """The addresses a process and its children listen on (in this namespace)."""
    pids = {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
    return {
        c.laddr.ip
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }


@pytest.fixture
def peer_machine(tmp_path: Path) -> Iterator[tuple[Machine, Path, Path]]:
    """Namespace B linked to this one by a veth (its own /24), B's sshd on B's address;
    (B, a known_hosts holding B's host key, the authorized_keys B's sshd reads). Skips,
    saying why, where namespaces cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root; the loopback-address split above still ran")
    if not Path(SSHD).exists() or shutil.which("ip") is None:
        pytest.skip(f"needs {SSHD} and iproute2's ip (apt-get install openssh-server iproute2)")
    tag = os.getpid() % 250
    b = Machine(f"rbsplit{tag}b", f"10.82.{tag}.2", f"10.82.{tag}.1", tmp_path / "b")
    veth = f"rbs{tag}b"
    sshd: subprocess.Popen[bytes] | None = None
    try:
        try:
            _ip("netns", "add", b.ns)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot make a network namespace here ({exc.stderr.decode().strip()})")
        _ip("link", "add", veth, "type", "veth", "peer", "name", veth + "p")
        _ip("link", "set", veth + "p", "netns", b.ns)
        _ip("addr", "add", f"{b.host_ip}/24", "dev", veth)
        _ip("link", "set", veth, "up")
        for args in (
            ("addr", "add", f"{b.ip}/24", "dev", veth + "p"),
            ("link", "set", veth + "p", "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("netns", "exec", b.ns, "ip", *args)
        folder = tmp_path / "b-sshd"
        folder.mkdir()
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        host_key.write_private_key(str(folder / "host_ed25519"))
        (folder / "host_ed25519").chmod(0o600)
        authorized = folder / "authorized_keys"
        authorized.write_text("")
        (folder / "sshd_config").write_text(
            f"Port 22\nListenAddress {b.ip}\nHostKey {folder / 'host_ed25519'}\n"
            f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "StrictModes no\nUsePAM no\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd = subprocess.Popen(
            ["ip", "netns", "exec", b.ns, SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        known_hosts = tmp_path / "a-known_hosts"
        known_hosts.write_text(f"{b.ip} {host_key.export_public_key().decode().strip()}\n")
        wait_until(
            lambda: any(port == 22 for _, _, port, _ in listeners(b.ns)), "B's sshd to listen"
        )
        yield b, known_hosts, authorized
    finally:
        found = subprocess.run(["ip", "netns", "pids", b.ns], capture_output=True, text=True)
        for pid in found.stdout.split():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        if sshd is not None:
            sshd.kill()
            sshd.wait(timeout=10)
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", b.ns], capture_output=True)


async def test_tiny_split_with_a_peer_in_another_network_namespace_opens_nothing_but_sshd(
    peer_machine: tuple[Machine, Path, Path], rbee_home: Path
) -> None:
    """builtin:tiny split between the queen's machine's hive (the worker's: a worker
    listens on its hive's loopback, where the queen reaches it) and a hive in namespace
    B answers through the queen, over SSH to B's sshd, found from B's URL with no hives
    config. In B nothing but sshd and the hive's HTTP port listens beyond loopback, the
    worker's hive and its worker listen on loopback only, and B's RPC port refuses a
    connection from this namespace; B's grant goes once the worker stops."""
    b, known_hosts, authorized = peer_machine
    async with spawn_queen(rbee_home, "--bind", b.host_ip, "--token", TOKEN) as running:
        queen = Queen(running.url, TOKEN, rbee_home)
        async with (
            # The worker's hive lends more: the plan puts the worker there.
            hive_at(queen, rbee_home, "localhost", "127.0.0.1",
                    env={"RBEE_LEND_MEMORY": "600KiB", "RBEE_KNOWN_HOSTS": str(known_hosts)}
                    ) as hive_a,
            hive_at(queen, b.home, "boxb", b.ip, "ip", "netns", "exec", b.ns,
                    env={"RBEE_LEND_MEMORY": TINY_LENT, "RBEE_TOKEN": TOKEN,
                         "RBEE_AUTHORIZED_KEYS": str(authorized)}) as hive_b,
        ):  # fmt: skip
            for hive_id in ("localhost", "boxb"):
                await queen_call(
                    queen, {"operation": "model_download", "model": "builtin:tiny",
                            "hive_id": hive_id},
                )  # fmt: skip
            async with JobClient(queen.url, token=TOKEN) as jobs:
                events = await infer_tiny(jobs)
                said = " ".join(str(e.data.get("human", "")) for e in events)
                assert "Hive localhost reaches hive boxb's RPC server over SSH" in said
                assert f"@{b.ip}:22, forward to its 127.0.0.1:" in said

                (granted,) = rbee_lines(authorized)
                rpc_port = int(granted.split('permitopen="127.0.0.1:')[1].split('"')[0])
                hive_port = int(hive_b.url.rsplit(":", 1)[1])
                for pid, address, port, command in listeners(b.ns):
                    if address not in ("127.0.0.1", "::1"):
                        assert "sshd" in command or (address, port) == (b.ip, hive_port), (
                            pid, address, port, command,
                        )  # fmt: skip
                rpc_on_b = [e for e in listeners(b.ns) if e[2] == rpc_port]
                assert [e[1] for e in rpc_on_b] == ["127.0.0.1"], rpc_on_b
                assert "hive._rpc_host" in rpc_on_b[0][3]
                assert tree_listeners(hive_a.process.pid) == {"127.0.0.1"}
                with pytest.raises(ConnectionRefusedError):  # from outside B
                    socket.create_connection((b.ip, rpc_port), timeout=5).close()

                await stop_the_only_worker(jobs)
                await anyio.to_thread.run_sync(
                    lambda: wait_until(lambda: not rbee_lines(authorized), "B to revoke")
                )
