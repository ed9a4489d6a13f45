"""The SSH link between hives for a split (hive/_rpc_link.py), against a real OpenSSH sshd
on 127.0.0.1 playing the peer hive's machine and a TCP echo server on its 127.0.0.1:P
playing the peer's RPC server: the key rbee grants carries bytes to P and does nothing
else, host keys are checked, and a dead or silent peer ends the link in seconds."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import asyncssh
import pytest

from hive._rpc_link import (
    KEEPALIVE_MAX,
    KEEPALIVE_S,
    RpcLink,
    RpcLinkError,
    authorized_line,
    grant,
    link_keypair,
    open_link,
    revoke,
)
from tests.support import LinkSshd, echo_server, free_port, link_sshd

pytestmark = pytest.mark.anyio

USER = "root"  # the test sshd admits root by key, as the SSH tests' does (CI runs as root)
LABEL = "split-7.box-a"  # the link's name in the peer's authorized_keys
PAYLOAD = os.urandom(1 << 20)  # 1 MiB each way: many SSH packets, not one
LINK_DEAD_S = 10.0  # the split's promise: a job on a cut link ends within this
KILLED_S = 5.0  # a peer whose sshd dies closes TCP: noticed at once, well inside this


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[LinkSshd]:
    """The peer's sshd, reading an authorized_keys file the test edits."""
    folder = tmp_path / "peer"
    folder.mkdir()
    with link_sshd(folder, free_port()) as sshd:
        yield sshd


@pytest.fixture
def known_hosts(peer: LinkSshd, tmp_path: Path) -> Path:
    """A known_hosts that trusts the peer's host key."""
    path = tmp_path / "known_hosts"
    path.write_text(peer.known_hosts_line)
    return path


@pytest.fixture
def key(rbee_home: Path) -> tuple[Path, str]:
    """This hive's RPC link key (made under RBEE_HOME)."""
    return link_keypair(rbee_home)


def _link(
    peer: LinkSshd, key: tuple[Path, str], known_hosts: Path, port: int
) -> AbstractAsyncContextManager[RpcLink]:
    """The link to the peer (named box-b) for its 127.0.0.1:`port`."""
    return open_link("127.0.0.1", peer.port, USER, key[0], known_hosts, port, peer="box-b")


async def _echo_through(endpoint: str) -> bytes:
    host, _, port = endpoint.rpartition(":")
    received = bytearray()
    async with await anyio.connect_tcp(host, int(port)) as stream, anyio.create_task_group() as tg:

        async def send() -> None:
            await stream.send(PAYLOAD)

        tg.start_soon(send)
        with anyio.fail_after(30):
            while len(received) < len(PAYLOAD):
                received += await stream.receive()
    return bytes(received)


async def _connect_raw(peer: LinkSshd, key: tuple[Path, str]) -> asyncssh.SSHClientConnection:
    """The link key used by hand, as someone who stole it would."""
    return await asyncssh.connect(
        "127.0.0.1",
        port=peer.port,
        username=USER,
        client_keys=[str(key[0])],
        known_hosts=None,
        config=[],
        agent_path=None,
    )


def test_link_key_is_made_once_and_private(rbee_home: Path) -> None:
    """The link key is an ed25519 key under RBEE_HOME/keys, 0600, the same on every call."""
    path, public = link_keypair(rbee_home)
    assert path == rbee_home / "keys" / "rpc-link"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert public.startswith("ssh-ed25519 ")
    assert link_keypair(rbee_home) == (path, public)


def test_grant_edits_only_rbee_s_line(tmp_path: Path, key: tuple[Path, str]) -> None:
    """grant adds one restricted line, replaces it on a port change, is idempotent, and
    keeps the user's own lines byte for byte; revoke takes only it away; a label that could
    smuggle words into the line, or a port that is none, is refused."""
    path = tmp_path / "ssh" / "authorized_keys"
    path.parent.mkdir()
    revoke(path, LABEL)
    assert not path.exists()  # nothing to revoke: no file made
    theirs = (  # a comment, a CRLF line, a last line without its newline
        b"# mine\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8Y user@laptop\r\n"
        b'from="10.0.0.1" ssh-rsa AAAA x'
    )
    path.write_bytes(theirs)
    path.chmod(0o644)
    grant(path, key[1], 5000, LABEL)
    first = path.read_bytes()
    assert first == theirs + b"\n" + authorized_line(key[1], 5000, LABEL).encode()
    assert first.splitlines()[-1].startswith(
        b'restrict,port-forwarding,permitopen="127.0.0.1:5000",'
    )
    assert first.splitlines()[-1].endswith(b" rbee-rpc-link:" + LABEL.encode())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    grant(path, key[1], 5000, LABEL)
    assert path.read_bytes() == first
    grant(path, key[1], 5000, "other-link")
    grant(path, key[1], 6000, LABEL)
    lines = path.read_bytes().splitlines(keepends=True)
    assert b"".join(lines[:3]) == theirs + b"\n"
    assert lines[3] == authorized_line(key[1], 6000, LABEL).encode()
    assert lines[4] == authorized_line(key[1], 5000, "other-link").encode()
    revoke(path, LABEL)
    revoke(path, LABEL)
    for bad_label, port in (("x ssh-ed25519 AAAA evil", 5000), ("ok", 70000)):
        with pytest.raises(ValueError):
            grant(path, key[1], port, bad_label)
    assert (
        path.read_bytes() == theirs + b"\n" + authorized_line(key[1], 5000, "other-link").encode()
    )


def test_grants_at_once_keep_every_line(tmp_path: Path, key: tuple[Path, str]) -> None:
    """Links granted at the same moment (a hive lending to several splits) all land."""
    path = tmp_path / "authorized_keys"
    labels = [f"split-{i}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda label: grant(path, key[1], 5000, label), labels))
    assert sorted(path.read_text().splitlines()) == sorted(
        authorized_line(key[1], 5000, label).rstrip("\n") for label in labels
    )


async def test_link_carries_bytes_both_ways(
    peer: LinkSshd, known_hosts: Path, key: tuple[Path, str]
) -> None:
    """After grant, the link's loopback endpoint reaches the peer's 127.0.0.1:P, both ways."""
    async with echo_server() as port:
        grant(peer.authorized_keys, key[1], port, LABEL)
        async with _link(peer, key, known_hosts, port) as link:
            assert link.endpoint.startswith("127.0.0.1:")
            assert await _echo_through(link.endpoint) == PAYLOAD
            assert await _echo_through(link.endpoint) == PAYLOAD  # a second connection too
            assert not link.closed.is_set()
        assert "closed by this hive" in await link.wait_closed()


async def test_link_key_cannot_run_commands(peer: LinkSshd, key: tuple[Path, str]) -> None:
    """The granted key opens no shell, runs no command and no sftp: nothing comes back."""
    grant(peer.authorized_keys, key[1], free_port(), LABEL)
    async with await _connect_raw(peer, key) as conn:
        ran = await conn.run("echo owned; id", check=False, stdin=asyncssh.DEVNULL)
        assert (ran.stdout, ran.stderr, ran.exit_status) == ("", "", 1)
        shell = await conn.run(check=False, input="echo owned\n")
        assert (shell.stdout, shell.stderr) == ("", "")
        with pytest.raises(asyncssh.Error):
            await conn.start_sftp_client()


async def test_link_key_cannot_forward_elsewhere(
    peer: LinkSshd, known_hosts: Path, key: tuple[Path, str]
) -> None:
    """The key granted for P cannot reach another port the peer listens on, nor make the
    peer listen for it."""
    async with echo_server() as port, echo_server() as other:
        grant(peer.authorized_keys, key[1], port, LABEL)
        with pytest.raises(RpcLinkError, match=rf"peer box-b .* refused to forward .*:{other}"):
            async with _link(peer, key, known_hosts, other):
                pass
        async with await _connect_raw(peer, key) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", other)
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("127.0.0.1", other + 1, "127.0.0.1", port)


async def test_revoked_key_cannot_reach_port(
    peer: LinkSshd, known_hosts: Path, key: tuple[Path, str]
) -> None:
    """After revoke, the key no longer logs in: P is out of its reach."""
    async with echo_server() as port:
        grant(peer.authorized_keys, key[1], port, LABEL)
        async with _link(peer, key, known_hosts, port):
            pass
        revoke(peer.authorized_keys, LABEL)
        with pytest.raises(RpcLinkError, match=r"peer box-b .* refused rbee's RPC link key"):
            async with _link(peer, key, known_hosts, port):
                pass


@pytest.mark.parametrize("trusted", ["nothing", "another key"])
async def test_unknown_host_key_is_refused(
    peer: LinkSshd, tmp_path: Path, key: tuple[Path, str], trusted: str
) -> None:
    """A peer whose host key known_hosts does not hold (or holds another for) is refused,
    naming it and what to do."""
    known = tmp_path / "known_hosts"
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known.write_text("" if trusted == "nothing" else f"[127.0.0.1]:{peer.port} {impostor}")
    grant(peer.authorized_keys, key[1], free_port(), LABEL)
    expected = "is not in" if trusted == "nothing" else "CHANGED"
    with pytest.raises(RpcLinkError, match=rf"peer box-b .*{expected}.*\[127.0.0.1\]:{peer.port}"):
        async with _link(peer, key, known, free_port()):
            pass


async def test_unreachable_peer_and_idle_port_are_named(
    peer: LinkSshd, known_hosts: Path, key: tuple[Path, str]
) -> None:
    """No RPC server behind the granted port, no link key, no sshd at the address: one
    sentence each, naming the peer."""
    port = free_port()
    grant(peer.authorized_keys, key[1], port, LABEL)
    with pytest.raises(RpcLinkError, match="nothing listens on peer box-b"):
        async with _link(peer, key, known_hosts, port):
            pass
    with pytest.raises(RpcLinkError, match=r"cannot read rbee's RPC link key .* box-b"):
        async with open_link(
            "127.0.0.1", peer.port, USER, key[0].with_name("gone"), known_hosts, port, peer="box-b"
        ):
            pass
    with pytest.raises(RpcLinkError, match=r"cannot reach peer gone .* its sshd runs"):
        async with open_link(
            "127.0.0.1", free_port(), USER, key[0], known_hosts, port, peer="gone"
        ):
            pass


async def test_killed_peer_ends_the_link(
    peer: LinkSshd, known_hosts: Path, key: tuple[Path, str]
) -> None:
    """Killing the peer's sshd fires `closed` at once, naming the peer; the endpoint stops
    answering."""
    async with echo_server() as port:
        grant(peer.authorized_keys, key[1], port, LABEL)
        async with _link(peer, key, known_hosts, port) as link:
            peer.kill()
            with anyio.fail_after(KILLED_S):
                reason = await link.wait_closed()
            assert reason.startswith("the RPC link to peer box-b (root@127.0.0.1:")
            with pytest.raises(OSError):
                await _echo_through(link.endpoint)


async def test_silent_peer_ends_the_link_within_ten_seconds(
    peer: LinkSshd, known_hosts: Path, key: tuple[Path, str]
) -> None:
    """A peer that stops answering with TCP still up (a cut cable) is noticed by the
    keepalives: `closed` fires within the split's 10 s."""
    assert (KEEPALIVE_MAX + 1) * KEEPALIVE_S < LINK_DEAD_S
    async with echo_server() as port:
        grant(peer.authorized_keys, key[1], port, LABEL)
        async with _link(peer, key, known_hosts, port) as link:
            peer.freeze()
            started = time.monotonic()
            with anyio.fail_after(LINK_DEAD_S):
                reason = await link.wait_closed()
            assert time.monotonic() - started > KEEPALIVE_S  # the keepalives, not a FIN
            assert "box-b" in reason and "not responding to keepalive" in reason
