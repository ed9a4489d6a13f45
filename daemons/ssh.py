"""The lifecycle library over SSH: `SshHost` (a `daemons.Host` reached with asyncssh), the
remote hive's spec, and the verified connection it runs on.

    async with open_host(target, accept_new_host_key=False) as host:
        await check_installed(host)
        daemon = remote_hive(host, paths, port=7835, queen_url=url)
        record = await daemons.start_detached(host, daemon, 30.0, narrate=NARRATE)

A public module of its own, not names on the `daemons` face: importing it loads asyncssh,
which only the commands (and the queen's jobs) that reach a remote hive should pay for.
Host keys are verified against known_hosts, authentication is by key only, secrets
travel on stdin, and no user text reaches a remote shell unquoted (`command`, `sh`).
"""

from daemons._errors import SshError
from daemons._remote import (
    START_SCRIPT,
    SshHost,
    check_installed,
    hive_program,
    open_host,
    remote_hive,
)
from daemons._ssh import ACCEPT_FLAG, command, connect, run, sh, text

__all__ = [
    "ACCEPT_FLAG",
    "START_SCRIPT",
    "SshError",
    "SshHost",
    "check_installed",
    "command",
    "connect",
    "hive_program",
    "open_host",
    "remote_hive",
    "run",
    "sh",
    "text",
]
