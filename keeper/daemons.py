"""Local daemon lifecycle: pidfiles that survive pid reuse, detached start, graceful stop.

A daemon started by the keeper runs in its own session with stdout and stderr appended
to a log file in the state folder, so it outlives the keeper and never writes into a
closed pipe. Its pidfile records pid and process start time: a pid that now belongs to
another process (reuse after a reboot or crash) is recognised as stale, never signalled.
Stopping signals the daemon's process group (the daemon and anything it spawned):
SIGTERM, then SIGKILL after a grace period (`narration_core.proctree`).
"""

from __future__ import annotations

import errno
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from keeper.errors import UsageError
from narration_core import CAPTURE_ENV
from narration_core.proctree import STOP_GRACE_S, StopResult, stop_tree

# Start times from psutil are floats rounded differently across calls; allow this slack.
START_TIME_SLACK_S = 1.0


@dataclass(frozen=True, slots=True)
class PidRecord:
    """What a pidfile holds: enough to find the daemon again and to know it is the same one."""

    name: str
    pid: int
    create_time: float
    url: str
    log: str
    argv: list[str]


class PidFile:
    """`run/<name>.pid` as JSON; read() returns None for a missing or unreadable file."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.path = run_dir / f"{name}.pid"

    def read(self) -> PidRecord | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return PidRecord(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):  # half-written or foreign file: treat as stale
            return None

    def write(self, record: PidRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)), encoding="utf-8")
        tmp.replace(self.path)  # atomic: a reader never sees half a record

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def live_process(record: PidRecord) -> psutil.Process | None:
    """The daemon's process if it still runs and is the one the record names, else None."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > START_TIME_SLACK_S:
            return None  # the pid was reused by another process
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (we could not bind it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise UsageError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "pass an address of this machine with --bind"
            ) from exc
    return False


def spawn_detached(argv: list[str], *, log_path: Path, env: dict[str, str]) -> int:
    """Start argv in a new session, stdin from /dev/null, stdout+stderr appended to log_path.

    The capture variable is set so the daemon flushes each narration line: the keeper
    tails the log to show startup as it happens. Returns the pid; the caller reaps it
    with `reap()` while it watches, and forgets it once the daemon is healthy.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**env, CAPTURE_ENV: "1"}
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    try:
        return os.posix_spawnp(
            argv[0],
            argv,
            child_env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, null_fd, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)
        os.close(null_fd)


def reap(pid: int) -> int | None:
    """The exit code if our child `pid` has exited (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (or already reaped)
        return None if psutil.pid_exists(pid) else -1
    if done == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def stop_daemon(proc: psutil.Process, *, grace: float = STOP_GRACE_S) -> StopResult:
    """SIGTERM the daemon's group and tree, SIGKILL after `grace`; blocks until done."""
    return stop_tree(proc, grace=grace)
