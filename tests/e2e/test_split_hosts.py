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
import socket
from collections.abc import Iterator
from pathlib import Path

import anyio
import psutil
import pytest

from jobs.client import JobClient
from tests.support import (
    LinkSshd,
    Machine,
    Queen,
    answer_tiny,
    await_until,
    free_port,
    hive_at,
    link_sshd,
    listeners,
    peer_machines,
    queen_call,
    queen_with_hive,
    rbee_lines,
    run_job,
    spawn_queen,
    stop_the_only_worker,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
TINY_LENT = "512KiB"  # less than builtin:tiny needs with 4096 tokens x 2 slots (~780 KiB)
SSHD = "/usr/sbin/sshd"
DEADLINE_S = 60.0  # a hive to beat, a split to unload: a loaded 2-core box lags
TOKEN = "split-hosts-test-token"  # the queen's and the namespaced hives' (beyond loopback)


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
            events = await answer_tiny(jobs)
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
    """Namespace B linked to this one by a veth, B's sshd on B's address; (B, a
    known_hosts holding B's host key, the authorized_keys B's sshd reads). Skips, saying
    why, where namespaces cannot be made (the loopback-address split above still ran)."""
    with peer_machines(tmp_path, ["b"]) as (b,):
        known_hosts = tmp_path / "a-known_hosts"
        known_hosts.write_text(b.known_hosts_line)
        yield b, known_hosts, b.authorized_keys


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
            hive_at(queen, b.home, "boxb", b.ip, *b.prefix,
                    env={"RBEE_LEND_MEMORY": TINY_LENT, "RBEE_TOKEN": TOKEN,
                         "RBEE_AUTHORIZED_KEYS": str(authorized)}) as hive_b,
        ):  # fmt: skip
            for hive_id in ("localhost", "boxb"):
                await queen_call(
                    queen, {"operation": "model_download", "model": "builtin:tiny",
                            "hive_id": hive_id},
                )  # fmt: skip
            async with JobClient(queen.url, token=TOKEN) as jobs:
                events = await answer_tiny(jobs)
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
