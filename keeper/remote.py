"""The keeper's SSH host: the lifecycle library's `SshHost` (`daemons.ssh`), opened with
its failures made the keeper's `SshError` (exit 3).

The remote daemon starts from the library's constant START_SCRIPT (values as quoted
arguments, secrets on stdin; the pidfile records the daemon's own pid) and `stop`
signals that pid's process group, read from /proc: see `daemons._remote`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from daemons import HiveHost
from daemons.ssh import START_SCRIPT, SshHost
from daemons.ssh import open_host as _open_host
from keeper import ssh

__all__ = ["START_SCRIPT", "SshHost", "open_host"]


@contextlib.asynccontextmanager
async def open_host(target: HiveHost, *, accept_new_host_key: bool) -> AsyncIterator[SshHost]:
    """Connect to `target`'s machine and yield its SshHost; the connection ends with the
    block (a daemon it started keeps running). SSH failures in the block are SshError."""
    with ssh.keeper_errors():
        async with _open_host(target, accept_new_host_key=accept_new_host_key) as host:
            yield host
