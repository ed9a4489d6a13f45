"""What a bench starts, it stops: on return, on an exception, on SIGTERM and on Ctrl-C.

    with owned_home("rbee-bench-infer-") as home:
        env = {**os.environ, "RBEE_HOME": str(home)}
        ...  # start a queen, hives, workers, servers

A bench's daemons outlive it by design: `keeper queen start` detaches the queen into its
own session, and the hive puts each worker in another. Killing the bench's process group
reaches none of them, and a bench ended by a signal's default action runs no `finally`.
So the block turns SIGTERM and SIGINT into an exception that unwinds the bench, then stops
every process that carries the block's RBEE_HOME in its environment (the keeper passes it
on to the queen and hive, the hive to its workers) or descends from the bench, removes the
home, and ends the process with the signal it got (exit 143, 130), as if unhandled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import psutil

from jobs import HOME_ENV
from narration_core.proctree import KILL_WAIT_S, STOP_GRACE_S, any_alive, wait_gone

SIGNALS = (signal.SIGTERM, signal.SIGINT)  # a timeout's stop, and Ctrl-C
RETRY_S = 1.0  # seconds after which a signal the bench has not unwound for is raised again
SWEEPS = 3  # scans for processes of the home: one may have spawned another meanwhile


class Interrupted(KeyboardInterrupt):
    """The bench got `signum`. A KeyboardInterrupt, so asyncio, anyio and subprocess
    unwind for it as they do for Ctrl-C (asyncio re-raises it out of its loop at once)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """Handlers for SIGNALS: a signal interrupts the bench until it is stopping what it
    started; each is recorded, so the exit can say which came first.

    An exception raised from a handler is lost when the handler happens to run inside a
    `__del__` or a weakref callback (Python prints "Exception ignored in" and goes on), so
    after the first signal SIGALRM raises it again every RETRY_S until the block unwinds.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.stopping = False
        handled = (*SIGNALS, signal.SIGALRM)
        self.previous = {sig: signal.signal(sig, self._handle) for sig in handled}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGALRM:
            self.received.append(signum)
            if len(self.received) == 1:
                signal.setitimer(signal.ITIMER_REAL, RETRY_S, RETRY_S)
        # A second Ctrl-C while stopping must not cut the stop short: that is what would
        # leave daemons behind. The stop is bounded (about STOP_GRACE_S + KILL_WAIT_S).
        if self.received and not self.stopping:
            raise Interrupted(self.received[0])

    def stop_interrupting(self) -> None:
        # An interrupt may land on the very line that says stop: then say it again.
        with contextlib.suppress(Interrupted):
            self.stopping = True
        self.stopping = True
        signal.setitimer(signal.ITIMER_REAL, 0)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def owned_home(prefix: str = "rbee-bench-") -> Iterator[Path]:
    """A fresh temporary RBEE_HOME; when the block ends, however it ends, every process of
    that home or below this one is stopped and the folder removed.

    Stopping sends SIGTERM, waits STOP_GRACE_S, then sends SIGKILL. A SIGTERM or SIGINT
    that arrived in the block is raised again once everything is stopped, with its
    default action: the process ends by that signal, and its parent (a shell loop, a
    timeout) sees it did.
    """
    signals = _Signals()
    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield home
    finally:
        signals.stop_interrupting()
        try:
            stop_owned(home)
            shutil.rmtree(home)
        finally:
            signals.restore()
            # Here, not after an `except Interrupted`: inside a task group the exception
            # arrives wrapped in an exception group, which no such clause would catch.
            if signals.received:
                _die_by(signals.received[0])


def _die_by(signum: int) -> None:
    """End this process by `signum`'s default action (no traceback, conventional status)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def stop_owned(home: Path) -> list[psutil.Process]:
    """Stop every process of `home` (by RBEE_HOME) or descended from this process.

    Blocks until they are gone, SIGKILL after STOP_GRACE_S; returns the ones it found.
    Those that were this process's children are reaped.
    """
    stopped: list[psutil.Process] = []
    for _ in range(SWEEPS):
        found = owned_processes(home)
        if not found:
            break
        _stop(found)
        stopped += found
    for proc in stopped:
        with contextlib.suppress(ChildProcessError):  # not our child, or reaped already
            os.waitpid(proc.pid, os.WNOHANG)
    return stopped


def owned_processes(home: Path) -> list[psutil.Process]:
    """The live processes whose environment names `home` as RBEE_HOME, and this process's
    descendants (a server it started without one)."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    homes = {str(home), str(home.resolve())}
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid == me.pid:
            continue
        # Exited meanwhile, a zombie, or another user's process: none of them is ours.
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(HOME_ENV) in homes:
                found[proc.pid] = proc
    return [p for p in found.values() if any_alive([p])]


def _stop(found: list[psutil.Process]) -> None:
    """SIGTERM to the roots (a queen, a hive: each stops its own children, as `keeper hive
    stop` lets it), then to what they leave behind, then SIGKILL to the rest."""
    deadline = time.monotonic() + STOP_GRACE_S
    pids = {p.pid for p in found}
    roots = [p for p in found if _parent(p) not in pids]
    _send(roots, signal.SIGTERM)
    wait_gone(roots, timeout=STOP_GRACE_S)
    _send(found, signal.SIGTERM)
    if not wait_gone(found, timeout=max(0.0, deadline - time.monotonic())):
        _send(found, signal.SIGKILL)
        wait_gone(found, timeout=KILL_WAIT_S)


def _parent(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.Error:  # gone already
        return None


def _send(procs: list[psutil.Process], sig: signal.Signals) -> None:
    for proc in procs:
        # send_signal checks the create time first: a reused pid is never signalled.
        with contextlib.suppress(psutil.Error):
            if any_alive([proc]):
                proc.send_signal(sig)
