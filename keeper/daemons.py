"""The keeper's view of the daemon-lifecycle library (`daemons`): pidfiles, the start lock,
detached spawn, who holds a port, a graceful stop, all of them the library's.

Kept as the keeper's one door to them, so its commands say `daemons.PidFile` whichever
layer holds it. The one translation is `port_in_use`: an address that is not this
machine's is a usage error for the keeper (exit 2).
"""

from __future__ import annotations

from daemons import (
    HIVE_PROGRAM,
    HIVE_STATE_PREFIX,
    PRIVATE_FILE_MODE,
    QUEEN,
    QUEEN_START,
    SERVER_LOCK,
    CannotBind,
    PidFile,
    PidRecord,
    PortOwner,
    hive_daemon_name,
    live_process,
    port_owner,
    port_taken,
    reap,
    recorded_url,
    spawn_detached,
    start_lock,
    stop_daemon,
)
from daemons import port_in_use as _port_in_use
from keeper.errors import UsageError

__all__ = [
    "HIVE_PROGRAM",
    "HIVE_STATE_PREFIX",
    "PRIVATE_FILE_MODE",
    "QUEEN",
    "QUEEN_START",
    "SERVER_LOCK",
    "PidFile",
    "PidRecord",
    "PortOwner",
    "hive_daemon_name",
    "live_process",
    "port_in_use",
    "port_owner",
    "port_taken",
    "reap",
    "recorded_url",
    "spawn_detached",
    "start_lock",
    "stop_daemon",
]


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port; UsageError for an address this
    machine cannot listen on at all (pass another --bind)."""
    try:
        return _port_in_use(host, port)
    except CannotBind as exc:
        raise UsageError(str(exc)) from exc
