"""Connecting to a hive's machine with asyncssh: verified host keys, keys only, no prompts.

    async with ssh.connect(host, accept_new_host_key=False) as conn:
        result = await ssh.run(conn, ["uname", "-a"])

Host keys are checked against known_hosts (RBEE_KNOWN_HOSTS, else ~/.ssh/known_hosts). An
unknown host is refused with its fingerprint unless the user opted in with
`--accept-new-host-key`, which then stores it; a host whose key changed is refused always.
Authentication uses the SSH config's IdentityFile, the usual ~/.ssh keys and the agent,
never a password or keyboard-interactive prompt. Every failure is an `SshError` whose
message is one sentence saying what to do. Commands are argv lists joined with
shlex.quote: no user text reaches a remote shell unquoted.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncssh  # imported only through `daemons.ssh`, by whoever reaches a remote hive

from daemons._errors import SshError
from daemons._hosts import HiveHost, known_hosts_path, ssh_config_path

CONNECT_TIMEOUT_S = 10.0  # TCP connect plus key exchange and auth; a dead host fails here
KEEPALIVE_S = 15.0  # seconds between keepalives on an idle connection (logs -f)
KEEPALIVE_MAX = 3  # unanswered keepalives before the connection counts as dropped
COMMAND_TIMEOUT_S = 60.0  # one short remote command (cat, kill, the start script)
ACCEPT_FLAG = "--accept-new-host-key"


@contextlib.asynccontextmanager
async def connect(
    host: HiveHost, *, accept_new_host_key: bool = False
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An open, verified connection to `host`'s machine; closed when the block ends."""
    known_path = known_hosts_path()
    try:
        known_text = known_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known_text = ""
    except OSError as exc:
        raise SshError(f"cannot read {known_path} ({exc}); fix its permissions") from None
    checker = _HostKeyCheck(asyncssh.import_known_hosts(known_text), accept_new_host_key)
    config_path = ssh_config_path()
    where = f"{host.ssh_host}" + (f" (hive {host.alias})" if host.ssh_host != host.alias else "")
    try:
        conn = await asyncssh.connect(
            host.ssh_host,
            port=host.port if host.port is not None else (),
            username=host.user if host.user is not None else (),
            config=[str(config_path)] if config_path.exists() else [],
            known_hosts=checker.known_hosts,
            client_factory=lambda: checker,
            password=None,
            kbdint_auth=False,
            preferred_auth="publickey",
            ignore_encrypted=True,  # a key that needs a passphrase is skipped, not prompted
            connect_timeout=CONNECT_TIMEOUT_S,
            keepalive_interval=KEEPALIVE_S,
            keepalive_count_max=KEEPALIVE_MAX,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise checker.refusal(where, known_path) from None
    except asyncssh.PermissionDenied:
        raise SshError(
            f"{where} refused every SSH key offered; add your public key to its "
            "~/.ssh/authorized_keys (ssh-copy-id) or name the key with IdentityFile "
            f"in {config_path}"
        ) from None
    except (TimeoutError, socket.gaierror, OSError, asyncssh.Error) as exc:
        raise SshError(
            f"cannot reach {where} over SSH ({_reason(exc)}); check that the machine is "
            "up, its sshd runs, and the host and port in your config are right"
        ) from None
    if checker.accepted is not None:
        _remember(known_path, checker.accepted)
    try:
        yield conn
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S:g} s"
    return str(exc) or type(exc).__name__


class _HostKeyCheck(asyncssh.SSHClient):
    """asyncssh's client callbacks: sees each key known_hosts does not trust, and says
    whether it is new (acceptable with the flag) or a change (never acceptable)."""

    def __init__(self, known_hosts: asyncssh.SSHKnownHosts, accept_new: bool) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self.offered: tuple[str, int | None, asyncssh.SSHKey] | None = None
        self.changed = False
        self.accepted: tuple[str, int | None, asyncssh.SSHKey] | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        known_port = None if port == 22 else port
        self.offered = (host, known_port, key)
        self.changed = bool(self.known_hosts.match(host, addr, known_port)[0])
        if self.changed or not self.accept_new:
            return False
        self.accepted = self.offered
        return True

    def refusal(self, where: str, known_path: Path) -> SshError:
        if self.offered is None:
            return SshError(f"{where} offered no host key known_hosts could check; refusing")
        host, port, key = self.offered
        fingerprint = key.get_fingerprint()
        known_as = host if port is None else f"[{host}]:{port}"  # its known_hosts name
        if known_as not in where:
            where = f"{where} ({known_as})"
        if self.changed:
            return SshError(
                f"the host key of {where} CHANGED (it now offers {fingerprint}), which "
                "may be an attack; refusing. If the machine was reinstalled, remove its "
                f"old line from {known_path} (ssh-keygen -R '{known_as}') and connect again"
            )
        return SshError(
            f"{where} is not in {known_path}: it offers host key {fingerprint}; if that "
            f"is the machine's key, run again with {ACCEPT_FLAG} to trust and store it"
        )


def _remember(known: Path, accepted: tuple[str, int | None, asyncssh.SSHKey]) -> None:
    """Append the host key the user chose to trust, as OpenSSH writes it."""
    host, port, key = accepted
    name = host if port is None else f"[{host}]:{port}"
    line = f"{name} {key.export_public_key().decode().strip()}\n"
    known.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with known.open("a", encoding="utf-8") as f:
        f.write(line)


def command(argv: Sequence[str]) -> str:
    """A remote command line from argv: every word quoted, none interpreted by the shell."""
    return shlex.join(argv)


def sh(script: str, *args: str) -> str:
    """`sh -c SCRIPT sh ARGS…`: a constant script of ours with user values as $1, $2…"""
    return command(["sh", "-c", script, "sh", *args])


async def run(
    conn: asyncssh.SSHClientConnection, cmd: str, *, stdin: str | None = None
) -> asyncssh.SSHCompletedProcess:
    """Run `cmd` (built with `command`/`sh`) and return its result; SshError if the
    connection drops."""
    try:
        if stdin:
            return await conn.run(cmd, input=stdin, check=False, timeout=COMMAND_TIMEOUT_S)
        # No input: stdin at EOF, or a command that reads it would wait forever.
        return await conn.run(cmd, stdin=asyncssh.DEVNULL, check=False, timeout=COMMAND_TIMEOUT_S)
    except asyncssh.TimeoutError:
        raise SshError(
            f"a command on the remote did not finish within {COMMAND_TIMEOUT_S:g} s; "
            "check that machine's load and run the command again"
        ) from None
    except (asyncssh.Error, OSError) as exc:
        raise SshError(
            f"the SSH connection dropped ({_reason(exc)}); run the command again"
        ) from None


def text(value: str | bytes | None) -> str:
    """A remote command's stdout or stderr as text (asyncssh types it str | bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""
