"""`keeper hive start|stop|status|logs ALIAS` for a hive on another machine, over SSH.

The lifecycle library's sequence, as for the local hive, through its `SshHost` (the
remote hive's spec is the library's `daemons.ssh.remote_hive`): the
remote hive's startup narration streams back line by line (origin `ssh:<alias>`) until
its /health answers from here, then the keeper disconnects and the hive keeps running.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

import daemons as lifecycle
from jobs import (
    RbeePaths,
    is_loopback,
)
from keeper import daemon_log, daemons, launch
from keeper.daemons import HIVE_PROGRAM as PROGRAM
from keeper.daemons import hive_daemon_name as daemon_name
from keeper.errors import DaemonUnreachable, JobFailed, UsageError
from keeper.hosts import HiveHost
from keeper.output import make_renderer
from keeper.settings import KeeperSettings
from narration_core import LineSplitter, Narrator

if TYPE_CHECKING:  # asyncssh is imported only when a remote hive is asked for
    from keeper.remote import SshHost

NARRATE = Narrator("keeper")
FOLLOW_CHUNK = 64 * 1024  # bytes read from the remote `tail -F` at a time


def start(
    settings: KeeperSettings,
    target: HiveHost,
    *,
    port: int | None,
    timeout: float,
    accept_new_host_key: bool,
    beat_interval: float | None = None,
    lend_bytes: int | None = None,
) -> None:
    """Start rbee-hive on `target` detached, stream its startup until healthy, disconnect."""
    from daemons.ssh import check_installed, remote_hive
    from keeper import remote, ssh

    hive_port = target.hive_port if port is None else port
    if not 0 < hive_port < 65536:
        raise UsageError(f"--port {hive_port} is not a TCP port; pick one between 1 and 65535")
    name = daemon_name(target.alias)
    paths = RbeePaths.resolve().ensure()

    async def go() -> daemons.PidRecord | None:
        async with remote.open_host(target, accept_new_host_key=accept_new_host_key) as host:
            queen_url = target.queen_url or settings.queen_url
            daemon = remote_hive(
                host,
                paths,
                port=hive_port,
                queen_url=queen_url,
                beat_interval=beat_interval,
                lend_bytes=lend_bytes,
            )
            with launch.keeper_errors():
                running = await lifecycle.already_running(
                    host,
                    daemon,
                    label=f"hive {target.alias} on {target.ssh_host}",
                    narrate=NARRATE,
                    start_hint=f"keeper hive start {target.alias}",
                )
            if running is not None:
                if lend_bytes is not None:
                    NARRATE.action("lend_memory").target(target.alias).level("warn").human(
                        f"Hive {target.alias} already runs, so --lend-memory does not change "
                        f"what it lends; stop it (`keeper hive stop {target.alias}`) and start "
                        "it again"
                    ).emit()
                return None
            await check_installed(host)
            if _is_loopback_url(queen_url) and not is_loopback(host.peer_address()):
                NARRATE.action("queen_url").level("warn").human(
                    f"Hive {target.alias} will beat to {queen_url}, which on {target.ssh_host} "
                    "is that machine itself; set queen_url in its hives config entry to the "
                    "queen's address as that machine reaches it"
                ).emit()
            try:
                return await launch.start_detached(host, daemon, timeout)
            except ssh.SshError:
                raise
            except JobFailed as exc:  # say it the SSH way: exit 3 with the last lines above
                raise ssh.SshError(f"hive {target.alias} failed to start: {exc}") from None

    def waiting() -> None:
        NARRATE.action("wait_lock").human(
            f"Another keeper is starting hive {target.alias}; waiting for it"
        ).emit()

    with make_renderer(settings) as out:
        out.status(f"Starting {PROGRAM} {target.alias} on {target.ssh_host} over SSH")
        with daemons.start_lock(paths.run, name, on_wait=waiting):
            record = anyio.run(go)
        if record is not None:
            NARRATE.action("ready").target(record.url).human(
                f"Hive {target.alias} is ready at {record.url} (pid {record.pid} on "
                f"{target.ssh_host}); `keeper hive logs {target.alias}` shows its log"
            ).emit()


def _is_loopback_url(url: str) -> bool:
    from urllib.parse import urlsplit

    return is_loopback(urlsplit(url).hostname or "")


def stop(settings: KeeperSettings, target: HiveHost, *, accept_new_host_key: bool) -> None:
    """Stop the remote hive by its remote pidfile: SIGTERM, SIGKILL after the grace."""
    from keeper import remote

    async def go() -> None:
        async with remote.open_host(target, accept_new_host_key=accept_new_host_key) as host:
            await launch.stop(host, daemon_name(target.alias), label=f"hive {target.alias}")

    with make_renderer(settings):
        anyio.run(go)


def status(settings: KeeperSettings, target: HiveHost, *, accept_new_host_key: bool) -> None:
    """Is the remote hive's process running (its pidfile, checked over SSH)? Exit 3 if not,
    as for a local hive the queen cannot reach."""
    from keeper import remote

    async def go() -> daemons.PidRecord | None:
        async with remote.open_host(target, accept_new_host_key=accept_new_host_key) as host:
            record = await host.read_record(daemon_name(target.alias))
            if record is not None and await host.is_alive(record):
                return record
            return None

    with make_renderer(settings):
        record = anyio.run(go)
        if record is None:
            raise DaemonUnreachable(
                f"hive {target.alias} is not running on {target.ssh_host}; "
                f"start it with `keeper hive start {target.alias}`"
            )
        NARRATE.action("running").target(record.url).human(
            f"Hive {target.alias} is running on {target.ssh_host} (pid {record.pid}) at "
            f"{record.url}; log: {record.log}"
        ).emit()


def logs(
    settings: KeeperSettings,
    target: HiveHost,
    *,
    follow: bool,
    lines: int,
    accept_new_host_key: bool,
) -> None:
    """Print the remote hive's log (sanitised, or --json events); -f follows until Ctrl-C."""
    from keeper import remote, ssh

    show, flush = daemon_log.log_printer(PROGRAM, as_json=settings.json)

    async def go() -> None:
        async with remote.open_host(target, accept_new_host_key=accept_new_host_key) as host:
            path = host.logs / f"{daemon_name(target.alias)}.log"
            if not follow:
                result = await ssh.run(
                    host.conn, ssh.command(["tail", "-n", str(lines), str(path)])
                )
                if result.exit_status != 0:
                    raise UsageError(_no_log(target, path))
                for line in ssh.text(result.stdout).splitlines():
                    show(line)
                flush()
                return
            await _follow(host, path, lines, show, flush)

    anyio.run(go)


async def _follow(
    host: SshHost, path: Path, lines: int, put: Callable[[str], None], done: Callable[[], None]
) -> None:
    """Stream `tail -F` of the remote log until Ctrl-C; SshError when the link drops."""
    import asyncssh

    from keeper import ssh

    splitter = LineSplitter()
    cmd = ssh.command(["tail", "-n", str(max(lines, 0)), "-F", str(path)])
    try:
        async with host.conn.create_process(cmd, encoding=None) as process:
            while chunk := await process.stdout.read(FOLLOW_CHUNK):
                for line in splitter.feed(chunk):
                    put(line)
                done()
    except (asyncssh.Error, OSError):
        pass
    raise ssh.SshError(
        f"the SSH connection to {host.target.ssh_host} dropped while following hive "
        f"{host.target.alias}'s log; run `keeper hive logs -f {host.target.alias}` again"
    )


def _no_log(target: HiveHost, path: Path) -> str:
    return (
        f"no hive log at {path} on {target.ssh_host} yet; start the hive with "
        f"`keeper hive start {target.alias}`"
    )
