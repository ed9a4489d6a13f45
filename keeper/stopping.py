"""Stopping a daemon by its pidfile: the words said along the way, and the local stop.

`daemons.stop` stops a daemon on any host (async: a host may be reached over SSH);
`stop_local` is its blocking twin for a daemon of this machine, so `keeper queen stop`
needs no event loop and starts without importing anyio and asyncio. Both say the same
sentences, the library's (`daemons.say_*`): not running (stale pidfile removed),
stopping with SIGTERM, and how it ended (stopped, already exited, or killed after the
grace period).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import daemons as lifecycle
from keeper import daemons
from narration_core import Narrator
from narration_core.proctree import StopResult

NARRATE = Narrator("keeper")


def stop_local(
    run_dir: Path,
    name: str,
    *,
    label: str,
    if_not_running: Callable[[], None] | None = None,
) -> StopResult | None:
    """Stop this machine's daemon `name` (pidfile in `run_dir`), narrating as `label`.

    Blocks until its tree is gone (SIGTERM, the grace period, SIGKILL); removes the
    pidfile. Returns None when it was not running, after calling `if_not_running`
    (which may raise: say whose daemon answers instead).
    """
    pidfile = daemons.PidFile(run_dir, name)
    record = pidfile.read()
    proc = daemons.live_process(record) if record is not None else None
    if record is None or proc is None:
        pidfile.remove()
        if if_not_running is not None:
            if_not_running()
        say_not_running(label, record)
        return None
    say_stopping(label, record)
    try:
        result = daemons.stop_daemon(proc)
    except KeyboardInterrupt:  # Ctrl-C during the grace: a second stop request kills now
        NARRATE.action("kill").level("warn").target(record.pid).human(
            f"Interrupted: killing {label} (pid {record.pid}) now with SIGKILL"
        ).emit()
        daemons.stop_daemon(proc, grace=0)
        pidfile.remove()
        raise
    pidfile.remove()
    say_stopped(label, record, result)
    return result


def say_not_running(label: str, record: daemons.PidRecord | None) -> None:
    """The daemon was not running: no pidfile, or a stale one (already removed)."""
    lifecycle.say_not_running(NARRATE, label, record)


def say_stopping(label: str, record: daemons.PidRecord) -> None:
    lifecycle.say_stopping(NARRATE, label, record)


def say_stopped(label: str, record: daemons.PidRecord, result: StopResult | None) -> None:
    """How the stop ended; `result` None: the daemon had exited before it was signalled."""
    lifecycle.say_stopped(NARRATE, label, record, result)
