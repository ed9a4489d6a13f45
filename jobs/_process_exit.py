"""Ending a program without the interpreter's teardown, once it has nothing left to do;
and how a child process ended, in words (`how_it_ended`).

Teardown frees every module and object one by one: ~0.1-0.2 s for a server (which a
`keeper queen stop` would wait for) and ~20 ms for a keeper command (paid on every use).
Once a program's `main` has returned, its files are closed, its threads joined and its
children stopped, so only buffered output is left to save.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn


def exit_process(code: int = 0) -> NoReturn:
    """End the process now, after flushing logging, stdout and stderr; no teardown.

    Servers call it once `serve()` has returned: job logs are flushed and closed, the job
    table is closed and children are stopped by then. A second signal calls it mid-stop
    (what a second Ctrl-C means): jobs still running are found by the next start and
    recorded as failed (crash recovery); children that capture spawned get their
    parent-death signal. The keeper calls it once `main` has returned.
    """
    logging = sys.modules.get("logging")  # not imported: no handler to flush
    if logging is not None:
        with contextlib.suppress(Exception):  # a handler on a closed stream: nothing to save
            logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: nothing to save
            stream.flush()
    os._exit(code)


def how_it_ended(code: int) -> str:
    """A child's end in words: `exited with code 3`, or `was killed by SIGKILL` for the
    negative codes subprocess and asyncio report for a death by signal."""
    if code >= 0:
        return f"exited with code {code}"
    import signal

    try:
        name = signal.Signals(-code).name
    except ValueError:  # a real-time or unknown signal number
        name = f"signal {-code}"
    return f"was killed by {name}"
