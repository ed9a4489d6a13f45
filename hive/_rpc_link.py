"""The SSH link between hives for a split: a worker on hive A reaches the RPC server that
peer hive B runs on B's 127.0.0.1:P through an SSH local forward to B's sshd.

    key_path, public = link_keypair(home)               # on A, once
    grant(authorized_keys, public, port, label)         # on B, per link
    async with open_link(host, 22, user, key_path, known_hosts, port, peer="b") as link:
        use(link.endpoint)                              # "127.0.0.1:<A's local port>"
        reason = await link.wait_closed()               # the peer or the path went away
    revoke(authorized_keys, label)                      # on B, when the split unloads

No RPC socket listens beyond loopback: B's server is on its 127.0.0.1, A's end of the
forward is on A's 127.0.0.1. The key is rbee's own (never the user's), and B's
authorized_keys confines it to that one forward: `restrict` turns off forwarding, pty,
agent, X11 and ~/.ssh/rc, `port-forwarding` turns forwarding back on, `permitopen`
allows local forwards to 127.0.0.1:P only (Unix sockets included), `permitlisten` pins
remote forwards to 127.0.0.1:1 (OpenSSH has no "none" there; a port only root may bind),
and a forced `command` runs `false` for any shell, command or subsystem asked for
(`restrict` alone still runs them, sftp included). Host keys are checked against a
known_hosts file, never accepted blindly. docs/splitting.md has the security model.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import socket
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from hive.errors import HiveError
from jobs import FILE_MODE, LOOPBACK, private_folder

if TYPE_CHECKING:  # asyncssh (with cryptography) is imported where a key or link needs it:
    import asyncssh  # ~0.3 s and a deprecation notice, not paid by every hive start

KEY_FOLDER = "keys"  # under the home given: rbee's own keys
KEY_NAME = "rpc-link"  # the ed25519 private key of this hive's RPC links (0600)
# Remote forwards may only listen here: authorized_keys cannot say "none", and a port
# below 1024 is bound only by root (tcpmux, unused).
NO_LISTEN_PORT = 1
COMMENT_PREFIX = "rbee-rpc-link:"  # the comment that marks rbee's line for a label
CONNECT_TIMEOUT_S = 10.0  # TCP connect, key exchange and auth; a dead host fails here
PROBE_TIMEOUT_S = 10.0  # opening the probe channel through the forward
CLOSE_S = 5.0  # a closing link's goodbye; past it the connection is dropped unsent
# A link idle for KEEPALIVE_S sends a keepalive; after KEEPALIVE_MAX unanswered ones it
# counts as dead: (KEEPALIVE_MAX + 1) x KEEPALIVE_S = 8 s of silence, so a job on a cut
# link ends within the 10 s the split promises.
KEEPALIVE_S = 2.0
KEEPALIVE_MAX = 3
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")  # one word in a comment


class RpcLinkError(HiveError):
    """A link to a peer hive could not be made, granted or opened; `str()` says why and
    what to do."""


def link_keypair(home: Path) -> tuple[Path, str]:
    """This hive's key for RPC links: (private key path, public key in OpenSSH form).

    Made once under `home`/keys/rpc-link (0600, in a 0700 folder), then read back; two
    callers racing to make it end with one key (the first to link it into place)."""
    _load_asyncssh()
    import asyncssh

    folder = private_folder(home / KEY_FOLDER)
    path = folder / KEY_NAME
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="rbee rpc link")
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{KEY_NAME}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key.export_private_key())
            with contextlib.suppress(FileExistsError):  # another caller made it first
                os.link(temp, path)
        finally:
            os.unlink(temp)
    try:
        key = asyncssh.read_private_key(path)
    except (OSError, asyncssh.KeyImportError) as exc:
        raise RpcLinkError(
            f"cannot read the RPC link key {path} ({exc}); delete it to make a new one "
            "(then grant the links again)"
        ) from None
    return path, key.export_public_key().decode().strip()


def authorized_line(public_key: str, port: int, label: str) -> str:
    """rbee's authorized_keys line for the link `label`: `public_key` (OpenSSH form) may
    only forward to 127.0.0.1:`port`; no shell, command, pty or remote forward."""
    _load_asyncssh()
    import asyncssh

    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not a TCP port")
    if not LABEL.fullmatch(label):
        raise ValueError(f"link label {label!r} must be one word of letters, digits and ._@-")
    try:
        key = asyncssh.import_public_key(public_key)
    except asyncssh.KeyImportError as exc:
        raise ValueError(f"not an OpenSSH public key ({exc})") from None
    options = (
        f'restrict,port-forwarding,permitopen="{LOOPBACK}:{port}",'
        f'permitlisten="{LOOPBACK}:{NO_LISTEN_PORT}",command="false"'
    )
    key_text = key.export_public_key().decode().split()[:2]  # type and base64, no comment
    return f"{options} {' '.join(key_text)} {COMMENT_PREFIX}{label}\n"


def grant(authorized_keys: Path, public_key: str, port: int, label: str) -> None:
    """Write rbee's line for `label` into `authorized_keys`: replaced in place when there
    is one (a new port or key replaces it), appended otherwise; every other line kept
    byte for byte. Atomic (temp file, rename, 0600) and idempotent."""
    line = authorized_line(public_key, port, label)
    _rewrite(authorized_keys, label, line)


def revoke(authorized_keys: Path, label: str) -> None:
    """Remove rbee's line for `label` from `authorized_keys` (nothing to do when absent).
    New links with that key are refused at once; a link already open keeps its
    connection until it ends (sshd checks keys only when one logs in)."""
    if not LABEL.fullmatch(label):
        raise ValueError(f"link label {label!r} must be one word of letters, digits and ._@-")
    _rewrite(authorized_keys, label, None)


def revoke_prefixed(authorized_keys: Path, prefix: str) -> int:
    """Remove every rbee line whose label starts with `prefix` (a hive's leftovers of an
    earlier run: `<hive id>@`); the number removed. A missing file is left missing."""
    if not LABEL.fullmatch(prefix):
        raise ValueError(f"label prefix {prefix!r} must be one word of letters, digits and ._@-")
    if not authorized_keys.exists():
        return 0
    removed: list[bytes] = []

    def ours(line: bytes) -> bool:
        words = line.split()
        found = bool(words) and words[-1].startswith(f"{COMMENT_PREFIX}{prefix}".encode())
        if found:
            removed.append(line)
        return found

    _rewrite(authorized_keys, prefix, None, ours=ours)
    return len(removed)


def _is_ours(line: bytes, label: str) -> bool:
    words = line.split()
    return bool(words) and words[-1] == f"{COMMENT_PREFIX}{label}".encode()


def _rewrite(
    authorized_keys: Path,
    label: str,
    new: str | None,
    *,
    ours: Callable[[bytes], bool] | None = None,
) -> None:
    """Replace (or drop, `new` None) rbee's line for `label` (or every line `ours` picks),
    under an exclusive lock on the folder so two grants at once cannot lose one another's
    line."""
    path = authorized_keys.resolve()  # a symlinked file is edited where it lives
    try:
        _rewrite_locked(path, ours or (lambda line: _is_ours(line, label)), new)
    except OSError as exc:
        raise RpcLinkError(
            f"cannot update {path} for RPC link {label} ({exc.strerror or exc}); the hive's "
            "user must be able to write it and its folder"
        ) from None


def _rewrite_locked(path: Path, ours: Callable[[bytes], bool], new: str | None) -> None:
    folder = path.parent
    if not folder.exists():
        private_folder(folder)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            old = b""
        lines = old.splitlines(keepends=True)
        wanted = [] if new is None else [new.encode()]
        kept: list[bytes] = []
        for line in lines:
            if ours(line):
                kept += wanted  # in the old line's place; a duplicate is dropped
                wanted = []
            else:
                kept.append(line)
        if wanted:
            if kept and not kept[-1].endswith(b"\n"):
                kept[-1] += b"\n"
            kept += wanted
        content = b"".join(kept)
        if content == old:  # granted already, or nothing to revoke (no file made)
            return
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".authorized_keys.")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), FILE_MODE)
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    finally:
        os.close(dir_fd)  # releases the lock


@dataclass
class RpcLink:
    """An open link: `endpoint` ("127.0.0.1:PORT" on this machine) reaches the peer's
    127.0.0.1:`remote_port`. `closed` is set when the link ends; `reason` then says why
    in one sentence naming the peer."""

    peer: str
    local_port: int
    remote_port: int
    closed: anyio.Event = field(default_factory=anyio.Event)
    reason: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.local_port}"

    async def wait_closed(self) -> str:
        """Block until the link ends; the sentence saying why."""
        await self.closed.wait()
        assert self.reason is not None  # set before `closed`
        return self.reason

    def _ended(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.closed.set()


def _load_asyncssh() -> None:
    """Import asyncssh once, its cryptography deprecation notices silenced: they are for
    asyncssh's developers, and would reach the user's terminal through the keeper."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import asyncssh  # noqa: F401


@functools.cache
def _link_client_class() -> type[Any]:
    """asyncssh's client class for a link, made on first use (asyncssh loads then)."""
    _load_asyncssh()
    import asyncssh

    class _LinkClient(asyncssh.SSHClient):
        """asyncssh's callbacks: records the host key known_hosts refused (new or changed),
        and ends the link when the connection is lost."""

        def __init__(self, known_hosts: asyncssh.SSHKnownHosts, where: str) -> None:
            self.known_hosts = known_hosts
            self.where = where  # the peer, as messages name it
            self.offered: asyncssh.SSHKey | None = None
            self.changed = False
            self.link: RpcLink | None = None

        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            self.offered = key
            known_port = None if port == 22 else port  # how known_hosts names it
            self.changed = bool(self.known_hosts.match(host, addr, known_port)[0])
            return False  # known_hosts did not trust it: never accepted here

        def connection_lost(self, exc: Exception | None) -> None:
            if self.link is not None:
                cause = f" ({exc})" if exc is not None else ""
                self.link._ended(
                    f"the RPC link to peer {self.where} closed{cause}; that machine, its sshd "
                    "or the network to it went away: the split cannot go on without it"
                )

    return _LinkClient


@contextlib.asynccontextmanager
async def open_link(
    host: str,
    ssh_port: int,
    username: str,
    key_path: Path,
    known_hosts: Path,
    remote_port: int,
    *,
    peer: str | None = None,
) -> AsyncIterator[RpcLink]:
    """Connect to the peer's sshd with rbee's link key, check that it forwards to its
    127.0.0.1:`remote_port` (a probe channel: refusals fail here, not in llama.cpp), and
    listen on 127.0.0.1:<free port> for the forward; yields the open `RpcLink`.

    `peer` names the peer hive in messages (default `host`). Raises RpcLinkError, one
    sentence, when the host key is unknown or changed, the key is refused, the host is
    unreachable, or the forward is refused or finds nothing listening. Keepalives notice
    a silent peer within 8 s; the connection closes when the block ends."""
    _load_asyncssh()
    import asyncssh

    where = f"{peer or host} ({username}@{host}:{ssh_port})"
    try:
        text = await anyio.Path(known_hosts).read_text(encoding="utf-8")
        known = asyncssh.import_known_hosts(text)
    except (OSError, ValueError) as exc:
        raise RpcLinkError(
            f"cannot read known_hosts {known_hosts} for peer {where} ({exc}); add the peer's "
            "host key there (check it against the peer's own `ssh-keygen -lf` first)"
        ) from None
    client = _link_client_class()(known, where)
    conn = await _connect(client, host, ssh_port, username, key_path, known_hosts, where)
    link: RpcLink | None = None
    try:
        await _probe(conn, remote_port, where)
        try:
            listener = await conn.forward_local_port(LOOPBACK, 0, LOOPBACK, remote_port)
        except OSError as exc:
            raise RpcLinkError(
                f"cannot listen on this machine's {LOOPBACK} for the link to peer {where} "
                f"({exc.strerror or exc}); check that loopback is up and ports are free"
            ) from None
        link = RpcLink(peer or host, listener.get_port(), remote_port)
        client.link = link
        if conn.is_closed():  # lost between the probe and now
            client.connection_lost(None)
        yield link
    finally:
        if link is not None:
            link._ended(f"the RPC link to peer {where} was closed by this hive")
        conn.close()
        with anyio.move_on_after(CLOSE_S, shield=True) as waited:
            with contextlib.suppress(Exception):
                await conn.wait_closed()
        if waited.cancelled_caught:  # a frozen peer reads nothing: drop what is unsent
            conn.abort()


async def _connect(
    client: Any,
    host: str,
    ssh_port: int,
    username: str,
    key_path: Path,
    known_hosts: Path,
    where: str,
) -> asyncssh.SSHClientConnection:
    _load_asyncssh()
    import asyncssh

    try:
        return await asyncssh.connect(
            host,
            port=ssh_port,
            username=username,
            config=[],  # the user's ~/.ssh/config has no say in rbee's own link
            known_hosts=client.known_hosts,
            client_factory=lambda: client,
            client_keys=[str(key_path)],
            agent_path=None,
            password=None,
            kbdint_auth=False,
            preferred_auth="publickey",
            connect_timeout=CONNECT_TIMEOUT_S,
            keepalive_interval=KEEPALIVE_S,
            keepalive_count_max=KEEPALIVE_MAX,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise _host_key_refusal(client, host, ssh_port, known_hosts, where) from None
    except asyncssh.PermissionDenied:
        raise RpcLinkError(
            f"peer {where} refused rbee's RPC link key {key_path}; grant the link on the "
            "peer again (its authorized_keys lacks rbee's line for it, or it was revoked)"
        ) from None
    except (OSError, asyncssh.KeyImportError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError) and exc.filename:
            raise RpcLinkError(
                f"cannot read rbee's RPC link key for peer {where} ({exc}); make it again "
                "with link_keypair and grant the link again"
            ) from None
        raise RpcLinkError(
            f"cannot reach peer {where} over SSH ({_reason(exc)}); check that the machine "
            "is up, its sshd runs, and the host and port are right"
        ) from None
    except (TimeoutError, socket.gaierror, asyncssh.Error) as exc:
        raise RpcLinkError(
            f"cannot reach peer {where} over SSH ({_reason(exc)}); check that the machine "
            "is up, its sshd runs, and the host and port are right"
        ) from None


def _host_key_refusal(
    client: Any, host: str, port: int, known_hosts: Path, where: str
) -> RpcLinkError:
    known_as = host if port == 22 else f"[{host}]:{port}"
    if client.offered is None:
        return RpcLinkError(f"peer {where} offered no host key known_hosts could check; refusing")
    fingerprint = client.offered.get_fingerprint()
    if client.changed:
        return RpcLinkError(
            f"the host key of peer {where} CHANGED (it now offers {fingerprint}), which may "
            f"be an attack; refusing: if the machine was reinstalled, replace its line for "
            f"{known_as} in {known_hosts} with its new key and link again"
        )
    scan = f"ssh-keyscan{'' if port == 22 else f' -p {port}'} {host}"
    return RpcLinkError(
        f"peer {where} is not in {known_hosts} (it offers host key {fingerprint}); refusing: "
        f"add its host key for {known_as} there (`{scan}` prints the line; check it against "
        "the peer's own `ssh-keygen -lf`) and link again"
    )


async def _probe(conn: asyncssh.SSHClientConnection, remote_port: int, where: str) -> None:
    """Open one channel to the peer's 127.0.0.1:`remote_port` and close it: a forward the
    peer refuses, or finds nothing listening behind, fails here in a sentence."""
    _load_asyncssh()
    import asyncssh

    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            _, writer = await conn.open_connection(LOOPBACK, remote_port)
    except asyncssh.ChannelOpenError as exc:
        if exc.code == asyncssh.OPEN_CONNECT_FAILED:
            raise RpcLinkError(
                f"nothing listens on peer {where}'s {LOOPBACK}:{remote_port} ({exc.reason}); "
                "start its RPC server for this split first"
            ) from None
        raise RpcLinkError(
            f"peer {where} refused to forward to its {LOOPBACK}:{remote_port} "
            f"({exc.reason}); grant the link on the peer for port {remote_port}"
        ) from None
    except TimeoutError:
        raise RpcLinkError(
            f"peer {where} did not open a channel to its {LOOPBACK}:{remote_port} within "
            f"{PROBE_TIMEOUT_S:g} s; check that machine's load and link again"
        ) from None
    except (OSError, asyncssh.Error) as exc:
        raise RpcLinkError(
            f"the SSH connection to peer {where} dropped while opening the link "
            f"({_reason(exc)}); link again"
        ) from None
    writer.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S:g} s"
    return str(exc) or type(exc).__name__
