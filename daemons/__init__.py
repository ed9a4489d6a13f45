"""The daemon-lifecycle library the keeper and the queen share: where daemons run
(`Host`: `LocalHost`; SSH hosts speak the same calls), what they are (`Daemon`, the hive's
spec in `local_hive`), and one start, stop and status (`ensure_running`,
`start_detached`, `stop`, `status`), with pidfiles that survive pid reuse, the start
lock, the log tail that narrates a start, and the health probe. The SSH host is
`daemons.ssh` (a module of its own: it loads asyncssh).

    async with hold_start_lock(paths.run, daemon.name, on_wait=say_waiting):
        record = await ensure_running(LocalHost(paths.run), daemon, label="hive localhost",
                                      timeout_s=30, narrate=NARRATE, start_hint="…")

It sits below the programs: it imports `narration_core` and `jobs` (the vocabulary and
the client, for the probe), and no program. Errors are `DaemonError` leaves whose text is
the one sentence to show.

Every name loads on first use (PEP 562), as in `jobs`: the keeper reads a pidfile's URL
at the start of every command, which must not cost the whole library's imports.
"""

import typing

if typing.TYPE_CHECKING:
    from daemons._errors import (
        CannotBind,
        DaemonError,
        HostConfigError,
        PortTaken,
        SshError,
        StartFailed,
    )
    from daemons._host import (
        Daemon,
        Host,
        LocalHost,
        record_for,
        serves_here,
    )
    from daemons._hosts import (
        KNOWN_HOSTS_ENV,
        LOCAL,
        SSH_CONFIG_ENV,
        HiveHost,
        config_path,
        configured_hives,
        configured_hosts,
        known_hosts_path,
        resolve,
        sample_entry,
        ssh_config_aliases,
        ssh_config_path,
    )
    from daemons._lifecycle import (
        ABANDON_GRACE_S,
        Running,
        already_running,
        cannot_write,
        ensure_running,
        say_not_running,
        say_stopped,
        say_stopping,
        start_detached,
        status,
        stop,
        wait_healthy,
    )
    from daemons._logtail import (
        TAIL_CHUNK,
        LogSource,
        LogTail,
    )
    from daemons._pidfile import (
        HIVE_PROGRAM,
        HIVE_STATE_PREFIX,
        PRIVATE_FILE_MODE,
        QUEEN,
        QUEEN_PROGRAM,
        QUEEN_START,
        SERVER_LOCK,
        PidFile,
        PidRecord,
        PortOwner,
        hive_daemon_name,
        hold_start_lock,
        live_process,
        port_in_use,
        port_owner,
        port_taken,
        reap,
        recorded_url,
        spawn_detached,
        start_lock,
        stop_daemon,
    )
    from daemons._specs import (
        hive_argv,
        hive_env,
        local_hive,
        local_queen,
    )

_LAZY = {
    "ABANDON_GRACE_S": "daemons._lifecycle",
    "CannotBind": "daemons._errors",
    "Daemon": "daemons._host",
    "DaemonError": "daemons._errors",
    "HIVE_PROGRAM": "daemons._pidfile",
    "HIVE_STATE_PREFIX": "daemons._pidfile",
    "HiveHost": "daemons._hosts",
    "Host": "daemons._host",
    "HostConfigError": "daemons._errors",
    "KNOWN_HOSTS_ENV": "daemons._hosts",
    "LOCAL": "daemons._hosts",
    "LocalHost": "daemons._host",
    "LogSource": "daemons._logtail",
    "LogTail": "daemons._logtail",
    "PRIVATE_FILE_MODE": "daemons._pidfile",
    "PidFile": "daemons._pidfile",
    "PidRecord": "daemons._pidfile",
    "PortOwner": "daemons._pidfile",
    "PortTaken": "daemons._errors",
    "QUEEN": "daemons._pidfile",
    "QUEEN_PROGRAM": "daemons._pidfile",
    "QUEEN_START": "daemons._pidfile",
    "Running": "daemons._lifecycle",
    "SERVER_LOCK": "daemons._pidfile",
    "SSH_CONFIG_ENV": "daemons._hosts",
    "SshError": "daemons._errors",
    "StartFailed": "daemons._errors",
    "TAIL_CHUNK": "daemons._logtail",
    "already_running": "daemons._lifecycle",
    "cannot_write": "daemons._lifecycle",
    "config_path": "daemons._hosts",
    "configured_hives": "daemons._hosts",
    "configured_hosts": "daemons._hosts",
    "ensure_running": "daemons._lifecycle",
    "hive_argv": "daemons._specs",
    "hive_daemon_name": "daemons._pidfile",
    "hive_env": "daemons._specs",
    "hold_start_lock": "daemons._pidfile",
    "known_hosts_path": "daemons._hosts",
    "live_process": "daemons._pidfile",
    "local_hive": "daemons._specs",
    "local_queen": "daemons._specs",
    "port_in_use": "daemons._pidfile",
    "port_owner": "daemons._pidfile",
    "port_taken": "daemons._pidfile",
    "reap": "daemons._pidfile",
    "record_for": "daemons._host",
    "recorded_url": "daemons._pidfile",
    "resolve": "daemons._hosts",
    "sample_entry": "daemons._hosts",
    "say_not_running": "daemons._lifecycle",
    "say_stopped": "daemons._lifecycle",
    "say_stopping": "daemons._lifecycle",
    "serves_here": "daemons._host",
    "spawn_detached": "daemons._pidfile",
    "ssh_config_aliases": "daemons._hosts",
    "ssh_config_path": "daemons._hosts",
    "start_detached": "daemons._lifecycle",
    "start_lock": "daemons._pidfile",
    "status": "daemons._lifecycle",
    "stop": "daemons._lifecycle",
    "stop_daemon": "daemons._pidfile",
    "wait_healthy": "daemons._lifecycle",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'daemons' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ABANDON_GRACE_S",
    "HIVE_PROGRAM",
    "HIVE_STATE_PREFIX",
    "KNOWN_HOSTS_ENV",
    "LOCAL",
    "PRIVATE_FILE_MODE",
    "QUEEN",
    "QUEEN_PROGRAM",
    "QUEEN_START",
    "SERVER_LOCK",
    "SSH_CONFIG_ENV",
    "TAIL_CHUNK",
    "CannotBind",
    "Daemon",
    "DaemonError",
    "HiveHost",
    "Host",
    "HostConfigError",
    "LocalHost",
    "LogSource",
    "LogTail",
    "PidFile",
    "PidRecord",
    "PortOwner",
    "PortTaken",
    "Running",
    "SshError",
    "StartFailed",
    "already_running",
    "cannot_write",
    "config_path",
    "configured_hives",
    "configured_hosts",
    "ensure_running",
    "hive_argv",
    "hive_daemon_name",
    "hive_env",
    "hold_start_lock",
    "known_hosts_path",
    "live_process",
    "local_hive",
    "local_queen",
    "port_in_use",
    "port_owner",
    "port_taken",
    "reap",
    "record_for",
    "recorded_url",
    "resolve",
    "sample_entry",
    "say_not_running",
    "say_stopped",
    "say_stopping",
    "serves_here",
    "spawn_detached",
    "ssh_config_aliases",
    "ssh_config_path",
    "start_detached",
    "start_lock",
    "status",
    "stop",
    "stop_daemon",
    "wait_healthy",
]
