"""`keeper hive start|stop|logs [localhost]`: the local hive's lifecycle, a thin adapter
over the lifecycle library (`daemons`: the hive's spec, already running / port taken,
the detached start), with the keeper's renderer, start lock and exit codes.

The hive is started with the queen this keeper talks to (`--queen-url`, the pidfile's
URL, or the default) as its heartbeat target, so the queen learns it from its first
beat. The hive gets its credential (RBEE_HIVE_CREDENTIAL, derived from the queen's secret
in this RBEE_HOME, jobs._credentials) in its environment: it signs its beats with it and
admits only the queen's calls. The keeper's RBEE_TOKEN (the queen's) never reaches it.
`--lend-memory SIZE` reaches the hive as its own flag (in bytes), local or over SSH.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobs import RbeePaths
from keeper import daemon_log, daemons, launch
from keeper.errors import UsageError
from keeper.output import make_renderer
from keeper.settings import KeeperSettings
from narration_core import Narrator

if TYPE_CHECKING:
    from keeper.hosts import HiveHost

LOCAL = "localhost"  # the hive on this machine; any other alias is reached over SSH
START_TIMEOUT_S = 30.0  # a cold interpreter importing the server stack on a busy machine

NARRATE = Narrator("keeper")


def remote_target(alias: str) -> HiveHost | None:
    """The machine a remote alias names (keeper.hosts), None for the local hive."""
    from keeper.hosts import resolve

    target = resolve(alias)
    return None if target.is_local else target


def start(
    settings: KeeperSettings,
    alias: str,
    *,
    port: int | None,
    foreground: bool,
    timeout: float = START_TIMEOUT_S,
    beat_interval: float | None = None,
    accept_new_host_key: bool = False,
    any_port_if_running: bool = False,
    lend_memory: str | None = None,
) -> None:
    """Start the hive beating to the keeper's queen; stream its startup until healthy.

    A `port` given for a local hive that already runs elsewhere is an error (JobFailed),
    as for the queen, unless `any_port_if_running` (autostart: any running hive will do).
    `lend_memory` (`2G`, `512M`, `1.5GiB`) caps what the queen's placement may use on it;
    a value that is not a size is a UsageError (exit 2) before anything starts.
    """
    lend_bytes = None if lend_memory is None else _lend(lend_memory)
    if (target := remote_target(alias)) is not None:
        if foreground:
            raise UsageError(f"--foreground works for the local hive only, not {alias!r}")
        from keeper.commands import hive_remote

        hive_remote.start(
            settings,
            target,
            port=port,
            timeout=timeout,
            accept_new_host_key=accept_new_host_key,
            beat_interval=beat_interval,
            lend_bytes=lend_bytes,
        )
        return

    launch.start_local_hive(
        settings,
        alias,
        port=port,
        foreground=foreground,
        timeout=timeout,
        beat_interval=beat_interval,
        any_port_if_running=any_port_if_running,
        lend_bytes=lend_bytes,
    )


def stop(settings: KeeperSettings, alias: str, *, accept_new_host_key: bool = False) -> None:
    """Stop the hive (and so its workers): SIGTERM, SIGKILL after the grace."""
    if (target := remote_target(alias)) is not None:
        from keeper.commands import hive_remote

        hive_remote.stop(settings, target, accept_new_host_key=accept_new_host_key)
        return
    from keeper.lost_pidfile import adopt
    from keeper.stopping import stop_local

    paths = RbeePaths.resolve()
    name = daemons.hive_daemon_name(alias)
    with make_renderer(settings):
        # The hive's state folder has its pidfile's name (hive.settings.state_dir).
        adopt(
            paths.run,
            name,
            paths.state / name,
            log=paths.logs / f"{name}.log",
            label=f"hive {alias}",
        )
        stop_local(paths.run, name, label=f"hive {alias}")


def status(settings: KeeperSettings, alias: str, *, accept_new_host_key: bool = False) -> None:
    """The hive's own answer (its workers), through the queen: a forwarded hive_status job.
    For a hive configured as remote: whether its process runs, from its pidfile over SSH."""
    from jobs import hive_status_op
    from keeper.session import stream_operation

    try:
        target = remote_target(alias)
    except UsageError:  # not configured here: the queen may know it from its heartbeats
        target = None
    if target is not None:
        from keeper.commands import hive_remote

        hive_remote.status(settings, target, accept_new_host_key=accept_new_host_key)
        return

    stream_operation(settings, hive_status_op(hive_id=alias))


def install(
    settings: KeeperSettings,
    alias: str,
    *,
    venv: str | None,
    with_index: bool,
    accept_new_host_key: bool,
) -> None:
    """Install rbee on the remote machine `alias` names (keeper.commands.hive_install)."""
    target = remote_target(alias)
    if target is None:
        raise UsageError(
            f"{alias} is this machine, where rbee is already installed; "
            "install names a remote hive from the hives config or ~/.ssh/config"
        )
    from keeper.commands import hive_install

    hive_install.install(
        settings,
        target,
        venv=venv,
        with_index=with_index,
        accept_new_host_key=accept_new_host_key,
    )


def list_hives(settings: KeeperSettings) -> None:
    """The hives configured here (localhost and the hives config), then the hives the queen
    knows, from its config and their heartbeats. SSH config hosts are not listed."""
    from jobs import hive_list_op
    from keeper.hosts import configured_hosts
    from keeper.session import stream_operation

    with make_renderer(settings):
        for host in configured_hosts():
            where = "this machine" if host.is_local else _ssh_target(host)
            NARRATE.action("hive_config").target(host.alias).human(
                f"{host.alias}: {where} ({host.source})"
            ).emit()
    stream_operation(settings, hive_list_op())


def _ssh_target(host: HiveHost) -> str:
    """`ssh rbee@10.0.0.5:22, hive port 7835` (user and port left to the SSH config if unset)."""
    user = f"{host.user}@" if host.user else ""
    port = f":{host.port}" if host.port else ""
    return f"ssh {user}{host.ssh_host}{port}, hive port {host.hive_port}"


def logs(
    settings: KeeperSettings,
    alias: str,
    *,
    follow: bool,
    lines: int,
    accept_new_host_key: bool = False,
) -> None:
    """Print the hive's log (sanitised), following it with -f."""
    if (target := remote_target(alias)) is not None:
        from keeper.commands import hive_remote

        hive_remote.logs(
            settings, target, follow=follow, lines=lines, accept_new_host_key=accept_new_host_key
        )
        return
    path = RbeePaths.resolve().logs / f"{daemons.hive_daemon_name(alias)}.log"
    if not path.exists():
        raise UsageError(f"no hive log at {path} yet; start the hive with `keeper hive start`")
    daemon_log.print_log(
        path, program=daemons.HIVE_PROGRAM, as_json=settings.json, follow=follow, lines=lines
    )


def _lend(text: str) -> int:
    """`--lend-memory`'s SIZE in bytes; UsageError (exit 2) for a value that is not one."""
    from jobs import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
