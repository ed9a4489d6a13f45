"""SSH for the keeper: the lifecycle library's verified connection (`daemons.ssh`: host
keys checked against known_hosts, keys only, no prompts, argv quoted), its failures made
the keeper's `SshError` (exit 3, one sentence saying what to do).

    async with ssh.connect(host, accept_new_host_key=False) as conn:
        result = await ssh.run(conn, ssh.command(["uname", "-a"]))
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import asyncssh  # this module is imported only by the commands that reach remote hives

from daemons import HiveHost
from daemons import SshError as LibrarySshError
from daemons import ssh as _ssh
from keeper.errors import DaemonUnreachable

ACCEPT_FLAG = _ssh.ACCEPT_FLAG
command = _ssh.command
sh = _ssh.sh
text = _ssh.text


class SshError(DaemonUnreachable):
    """The hive's machine could not be reached, trusted or used over SSH (exit 3)."""


@contextlib.contextmanager
def keeper_errors() -> Iterator[None]:
    """The library's SSH failures as the keeper's SshError (exit 3), same sentence."""
    try:
        yield
    except LibrarySshError as exc:
        raise SshError(str(exc)) from None


@contextlib.asynccontextmanager
async def connect(
    host: HiveHost, *, accept_new_host_key: bool = False
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An open, verified connection to `host`'s machine; closed when the block ends."""
    with keeper_errors():
        async with _ssh.connect(host, accept_new_host_key=accept_new_host_key) as conn:
            yield conn


async def run(
    conn: asyncssh.SSHClientConnection, cmd: str, *, stdin: str | None = None
) -> asyncssh.SSHCompletedProcess:
    """Run `cmd` (built with `command`/`sh`); SshError if the connection drops."""
    with keeper_errors():
        return await _ssh.run(conn, cmd, stdin=stdin)
