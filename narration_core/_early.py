"""A child started before the event loop exists, its output kept until the loop takes over.

    early = EarlyChild.start(argv, stdin=None)      # before the slow imports
    ...                                             # import anyio, the renderers, ...
    proc = ProcessNarrationCapture(...).adopt(early)
    code = await proc.wait()

`keeper run` spends most of its start-up importing what relays and renders output (the
event loop, the renderers: ~130 ms). Started first, the command runs during those
imports instead of after them, so the keeper adds almost nothing to the command's own
time (`bench/bench_run.py`). While nobody relays yet, a thread reads both pipes into
memory, so the command never stalls on a full pipe; past `HOLD_MAX` bytes it stops
reading (the command then waits on its pipe, as under a slow terminal). `take_over()`
stops the thread and hands the kept bytes on in order; nothing is lost or reordered,
only relayed a little later than printed.

The child is spawned exactly as `ProcessNarrationCapture.spawn` spawns one (its own
session, the capture marker in its environment, killed when this process dies), so an
adopted child is stopped, drained and reaped like any other. This module imports only
the standard library: it runs before everything else is loaded.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from narration_core.sinks import CAPTURE_ENV

HOLD_MAX = 1024 * 1024  # bytes kept before take-over (~20 k lines: the command's start and
# first output overlap the keeper's; peak memory stays within 1.2x), then it waits on its pipe
READ_SIZE = 64 * 1024  # bytes per read while holding: as the capture reads (READ_SIZE)
STOP_GRACE_EARLY_S = 2.0  # SIGTERM to SIGKILL when stopped before the take-over
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): signal sent when the parent dies
# Ctrl-C, SIGTERM (CI timeouts, systemd) and SIGHUP (a closed terminal): each means "stop
# the tree". Held (blocked) from the spawn until a supervisor takes them over, so one that
# arrives while the keeper is still loading is acted on like any other, not lost half-way.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment a captured child gets: `env` (default ours) plus the marker that
    tells rbee programs their stdout is parsed by a parent (flush every event)."""
    merged = dict(os.environ if env is None else env)
    merged[CAPTURE_ENV] = "1"
    return merged


def die_with_parent() -> Callable[[], None]:
    """A preexec function asking the kernel to SIGKILL the child when this thread dies.

    Runs in the forked child before exec, so it only calls a prctl bound beforehand
    (no imports, no locks). If the parent died before the call, the child kills itself:
    nobody is left to stop it.
    """
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    kill, sigkill = os.kill, int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:
            kill(os.getpid(), sigkill)

    return preexec


def popen_captured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> dict[str, Any]:
    """The keyword arguments every captured child is started with (subprocess.Popen's):
    piped stdout and stderr, its own session, the marker, death with its parent."""
    extra: dict[str, Any] = {}
    if sys.platform == "linux":
        extra["preexec_fn"] = die_with_parent()
    return {
        "stdin": stdin,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "env": child_env(env),
        "cwd": cwd,
        "start_new_session": True,
        **extra,
    }


def _unmasked(
    preexec: Callable[[], None] | None, mask: set[int | signal.Signals]
) -> Callable[[], None]:
    """`preexec`, run after restoring `mask` in the forked child: it must not inherit the
    stop signals blocked for the parent."""

    def run() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if preexec is not None:
            preexec()

    return run


class EarlyChild:
    """A started child whose stdout and stderr a thread keeps until `take_over()`."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        argv: Sequence[str],
        mask: set[int | signal.Signals] | None = None,
    ) -> None:
        assert popen.stdout is not None and popen.stderr is not None
        self.popen = popen
        self.argv = list(argv)
        self.pid = popen.pid
        self.fds = {"stdout": popen.stdout.fileno(), "stderr": popen.stderr.fileno()}
        self.taken = False  # True once take_over() handed the pipes on
        self._mask = mask  # the signal mask to restore once the stop signals are taken over
        self._held: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        self._eof = {"stdout": False, "stderr": False}
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._hold, name=f"hold {self.pid}", daemon=True)
        self._thread.start()

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        hold_signals: bool = False,
    ) -> EarlyChild:
        """Start `argv` as `ProcessNarrationCapture.spawn` would; raises OSError
        (FileNotFoundError, PermissionError, ...) when it cannot be started.

        `hold_signals`: block STOP_SIGNALS in this process from now until
        `release_signals()` (the child starts with the mask it would have had)."""
        if not argv:
            raise ValueError("spawn needs a program to run; argv is empty")
        options = popen_captured(argv, env=env, stdin=stdin)
        mask = None
        if hold_signals:
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            options["preexec_fn"] = _unmasked(options.get("preexec_fn"), mask)
        try:
            popen = subprocess.Popen(list(argv), **options)
        except BaseException:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise
        return cls(popen, argv, mask)

    def release_signals(self) -> None:
        """Unblock the stop signals held since the spawn (call once they have handlers):
        one that arrived meanwhile is delivered now."""
        if self._mask is not None:
            mask, self._mask = self._mask, None
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def take_over(self) -> tuple[dict[str, list[bytes]], dict[str, bool]]:
        """Stop holding: the chunks kept per stream (in order) and which streams ended.
        The pipes are the caller's from here on."""
        self.taken = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        held, self._held = self._held, {"stdout": [], "stderr": []}
        return held, dict(self._eof)

    def stop(self) -> None:
        """Stop the child's tree before anyone took it over (the keeper was interrupted
        while loading): SIGTERM to its session, a grace period, then SIGKILL; reaped."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(STOP_GRACE_EARLY_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait()
        if not self.taken:
            self.take_over()
        self.release_signals()
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()

    def _hold(self) -> None:
        """Read both pipes into memory until woken, both end, or HOLD_MAX is held."""
        poller = select.poll()
        names = {fd: name for name, fd in self.fds.items()}
        for fd in names:
            poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        held = 0
        while names and held < HOLD_MAX:
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    return
                data = os.read(fd, READ_SIZE)
                if data:
                    self._held[names[fd]].append(data)
                    held += len(data)
                else:
                    self._eof[names.pop(fd)] = True
                    poller.unregister(fd)
        select.select([self._wake_r], [], [])  # full, or both ended: wait to be taken over
