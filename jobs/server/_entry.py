"""A daemon's entry, end to end: claim the state folder and the port, serve, exit.

    run_daemon("queen-rbee", state_dir, host, port, serve_on)   # never returns

queen, hive and worker each parse their flags, narrate their start, then hand over here.
What keeps a daemon from starting is reported in one line (on stderr, or through the
program's own `report`) and ends the process with a status the keeper can tell apart:
a busy state folder (another server holds it), a port that cannot be bound, a disk with
no room for the job table. A clean stop ends with `exit_process(0)`, skipping the
interpreter's teardown once everything is flushed and closed.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn

import anyio

from jobs import CannotListen, StateFolderBusy, StorageError, exit_process
from jobs.server._serve import claim

EXIT_FAILED = 1  # the port could not be bound, no room on the disk, or a `fatal` error
EXIT_BUSY = 2  # another server holds the state folder (a usage error for queen and hive)

Report = Callable[[str], None]


def run_daemon(
    prog: str,
    state_dir: Path,
    host: str,
    port: int,
    serve_on: Callable[[socket.socket], Awaitable[None]],
    *,
    report: Report | None = None,
    busy_exit: int = EXIT_BUSY,
    fatal: tuple[type[Exception], ...] = (),
) -> NoReturn:
    """Lock `state_dir`, bind `host:port`, run `serve_on(sock)` under anyio, then exit.

    The lock is held until the process exits. `report` says why the daemon did not start
    or stopped (default: `prog: reason` on stderr); a busy state folder exits with
    `busy_exit`, a port taken or a full disk with EXIT_FAILED, and so does an error of a
    `fatal` class raised by `serve_on` (the worker's model that does not load).
    """
    say = report or (lambda reason: print(f"{prog}: {reason}", file=sys.stderr))
    try:
        state_lock, sock = claim(state_dir, host, port)
    except StateFolderBusy as exc:
        say(str(exc))
        sys.exit(busy_exit)
    except CannotListen as exc:
        say(str(exc))
        sys.exit(EXIT_FAILED)
    except StorageError as exc:
        say(f"not started: {exc.at_start()}")
        sys.exit(EXIT_FAILED)
    try:
        with state_lock:  # held until the process exits
            anyio.run(serve_on, sock)
    except fatal as exc:
        say(str(exc))
        sys.exit(EXIT_FAILED)
    exit_process(0)  # all is flushed and closed: skip the interpreter's teardown
