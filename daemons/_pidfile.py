"""This machine's side of a daemon's lifecycle: pidfiles that survive pid reuse, the start
lock, a detached spawn, who holds a port, a graceful stop.

A daemon started by the keeper or the queen runs in its own session with stdout and
stderr appended to a log file in the state folder, so it outlives its starter and never
writes into a closed pipe. Its pidfile records pid and process start time: a pid that now belongs to
another process (reuse after a reboot or crash) is recognised as stale, never signalled.
Stopping signals the daemon's process group (the daemon and anything it spawned):
SIGTERM, then SIGKILL after a grace period (`narration_core.proctree`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from daemons._errors import CannotBind
from jobs import HOME_ENV
from narration_core import CAPTURE_ENV
from narration_core.proctree import STOP_GRACE_S, StopResult, stop_tree

if TYPE_CHECKING:  # psutil is imported where a process is looked at: settings read pidfiles
    import psutil

# Start times from psutil are floats rounded differently across calls; allow this slack.
START_TIME_SLACK_S = 1.0
QUEEN = "queen"  # the queen's name for its pidfile, start lock and log
QUEEN_PROGRAM = "queen-rbee"  # the queen's console script and actor
SERVER_LOCK = "/server.lock"  # the file every rbee server holds locked in its state folder
HIVE_STATE_PREFIX = "hive-"  # a hive's state folder is <state>/hive-<alias> (hive.settings)
HIVE_PROGRAM = "rbee-hive"  # the hive's console script, local and remote
PRIVATE_FILE_MODE = 0o600  # pidfiles, lock files and daemon logs: only their owner reads them
QUEEN_START = "keeper queen start"  # the command that starts the queen, for hints
FREE_PORT_SEARCH = 100  # ports above a taken one tried for the hint's free port


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
        tmp.unlink(missing_ok=True)  # a leftover may have been created with wider modes
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        try:
            with open(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(asdict(record)))
            tmp.replace(self.path)  # atomic: a reader never sees half a record
        except OSError:  # disk full: leave no half-written file behind
            tmp.unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def hive_daemon_name(alias: str) -> str:
    """The hive's pidfile, lock and log name: `hive-localhost`."""
    return f"{HIVE_STATE_PREFIX}{alias}"


def recorded_url(run_dir: Path, name: str) -> str | None:
    """The URL a daemon's pidfile records, without looking at processes (cheap, at startup).

    A stale record still names where that daemon was: the caller's request then fails
    with "not reachable at <that URL>", which is the right thing to say.
    """
    record = PidFile(run_dir, name).read()
    return record.url if record is not None and record.url else None


@contextlib.contextmanager
def start_lock(
    run_dir: Path, name: str, *, on_wait: Callable[[], None]
) -> Iterator[Callable[[], None]]:
    """Hold `run/<name>.lock` (flock) for a whole start sequence; `on_wait` if it is taken.

    Two keepers starting the same daemon in one RBEE_HOME take turns: the second waits
    until the first has a healthy daemon (or gave up), then finds it running. Yields a
    function that releases the lock early (a foreground start, once healthy). The kernel
    drops the lock when its holder dies, so a killed keeper never leaves it held.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield lambda: fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)  # releases the lock


@contextlib.asynccontextmanager
async def hold_start_lock(
    run_dir: Path, name: str, *, on_wait: Callable[[], None], poll_s: float = 0.1
) -> AsyncIterator[None]:
    """`start_lock` for a server's event loop (the queen's hive_start): the same lock file,
    so a keeper and the queen starting one hive take turns, but waited for without
    blocking the loop (a non-blocking try every `poll_s`)."""
    import anyio

    run_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a local folder, once
    fd = os.open(run_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    on_wait()
                    waited = True
                await anyio.sleep(poll_s)
        yield
    finally:
        os.close(fd)  # releases the lock


def live_process(record: PidRecord) -> psutil.Process | None:
    """The daemon's process if it still runs and is the one the record names, else None."""
    import psutil

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
        # As the server itself binds (uvicorn sets it): without it, the TIME_WAIT left by
        # the previous daemon's keep-alive connections reads as "in use" for a minute.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise CannotBind(
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
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
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


@dataclass(frozen=True, slots=True)
class PortOwner:
    """The local process listening on a port, and the rbee state folder it serves if any.

    `state` is the folder whose `server.lock` the process holds (every rbee server locks
    its state folder), `home` its RBEE_HOME; either is None when psutil cannot tell
    (another user's process, or not an rbee server).
    """

    pid: int
    state: Path | None
    home: str | None

    @property
    def hive(self) -> str | None:
        """The alias when the server is a hive: its state folder is `hive-<alias>`
        (hive.settings), a queen's is the home's state folder itself."""
        if self.state is None or not self.state.name.startswith(HIVE_STATE_PREFIX):
            return None
        return self.state.name.removeprefix(HIVE_STATE_PREFIX)

    def describe(self, ours: Path | None = None) -> str:
        """Who it is; `ours` is this RBEE_HOME's state folder, to tell its servers apart."""
        if self.state is None:
            return f"pid {self.pid}, which is not a queen of this RBEE_HOME"
        home_state = self.state.parent if self.hive is not None else self.state
        whose = "this RBEE_HOME" if home_state == ours else "another RBEE_HOME"
        what = f"hive {self.hive}" if self.hive is not None else "the queen"
        return f"{what} of {whose} (pid {self.pid}, state folder {self.state})"

    def stop_hint(self) -> str:
        """The command that stops this server through its own pidfile."""
        command = "keeper queen stop" if self.hive is None else f"keeper hive stop {self.hive}"
        if self.home:
            return f"`RBEE_HOME={self.home} {command}`"
        if self.state is not None:
            return f"`{command}` with RBEE_HOME unset"
        return f"`kill {self.pid}`"


def port_taken(
    bind: str, port: int, owner: PortOwner | None, ours: Path, *, start: str = QUEEN_START
) -> str:
    """The sentence for a port a daemon cannot have: the rbee server holding it named (`ours`
    is this RBEE_HOME's state folder) with the command that stops it, else the program's pid
    (`owner` None: psutil cannot see who); then `start`, the command that starts the daemon
    (`keeper hive start`), with a free port. The command that hit the port may have no
    --port to pass (`keeper infer` starts a queen and hive itself), so the hint names one."""
    elsewhere = f"use another port: `{start} --port {_free_port_after(bind, port)}`"
    if owner is not None and owner.state is not None:
        return (
            f"port {port} on {bind} is taken by {owner.describe(ours)}; "
            f"stop it with {owner.stop_hint()}, or {elsewhere}"
        )
    who = f" (pid {owner.pid})" if owner is not None else ""
    return f"port {port} on {bind} is taken by another program{who}; stop it, or {elsewhere}"


def _free_port_after(bind: str, port: int) -> str:
    """The first port above `port` nothing listens on now (`PORT` if none is near)."""
    for candidate in range(port + 1, min(port + FREE_PORT_SEARCH, 65536)):
        with contextlib.suppress(CannotBind):  # that address cannot be bound at all
            if not port_in_use(bind, candidate):
                return str(candidate)
    return "PORT"


def port_owner(port: int) -> PortOwner | None:
    """Who listens on TCP `port` on this machine, if psutil can see it (our own user)."""
    import psutil

    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
                continue
            if conn.pid is None:
                return None
            proc = psutil.Process(conn.pid)
            state = home = None
            with contextlib.suppress(psutil.Error):
                locks = [f.path for f in proc.open_files() if f.path.endswith(SERVER_LOCK)]
                state = Path(locks[0]).parent if locks else None
                home = proc.environ().get(HOME_ENV) if state is not None else None
            return PortOwner(pid=conn.pid, state=state, home=home)
    return None


def reap(pid: int) -> int | None:
    """The exit code if our child `pid` has exited (reaping it), else None."""
    import psutil

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
