"""Where daemons run and what to run: `Daemon` (name, program, argv, env, URL, log) and
the `Host` protocol every host implements, with `LocalHost`, this machine.

    daemon = Daemon("hive-localhost", "rbee-hive", argv, url=url, log_path=log, env=env)
    record = await start_detached(LocalHost(paths.run), daemon, 30.0, narrate=NARRATE)

Everything that touches a machine goes through a `Host`, so the same start, stop and
status work locally and over SSH (`daemons.SshHost` speaks the same calls).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from daemons import _pidfile
from daemons._logtail import TAIL_CHUNK
from narration_core.proctree import STOP_GRACE_S, StopResult


@dataclass(frozen=True, slots=True)
class Daemon:
    """What to start: `name` keys its pidfile, lock and log; `program` is the actor its
    plain output lines get; `url` is where its /health answers once it serves."""

    name: str
    program: str
    argv: list[str]
    url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)


class Host(Protocol):
    """Where daemons run. Calls are async so a host reached over SSH fits the same shape."""

    name: str

    async def spawn(self, daemon: Daemon) -> _pidfile.PidRecord:
        """Start `daemon` detached, its output appended to its log; its pidfile record."""
        ...

    async def read_log(self, path: Path, offset: int) -> bytes:
        """What the log holds past `offset` (at most TAIL_CHUNK bytes); b"" if none yet."""
        ...

    async def rotate_log(self, path: Path) -> None:
        """Keep the previous run's log as `<name>.log.1`, so each start has its own."""
        ...

    async def log_size(self, path: Path) -> int:
        """The log's size in bytes now (0 if it is not there): where a drain may stop."""
        ...

    async def exit_code(self, pid: int) -> int | None:
        """The daemon's exit code once it has exited (reaping it), else None."""
        ...

    def pidfile(self, name: str) -> _pidfile.PidFile:
        """The local pidfile of `name` (a foreground start; local hosts only)."""
        ...

    async def read_record(self, name: str) -> _pidfile.PidRecord | None:
        """The pidfile record of the daemon `name` on this host; None if none."""
        ...

    async def write_record(self, record: _pidfile.PidRecord) -> None: ...

    async def remove_record(self, name: str) -> None: ...

    def log_origin(self, pid: int) -> str:
        """The origin the daemon's relayed log lines get (`pid 123`, `ssh:gpu1`)."""
        ...

    async def unhealthy_reason(self, daemon: Daemon) -> str | None:
        """Why a running daemon's /health does not answer from here, if the host can tell."""
        ...

    async def is_alive(self, record: _pidfile.PidRecord) -> bool:
        """True when the process the record names still runs (not a reused pid)."""
        ...

    async def free_bytes(self, folder: Path) -> int | None:
        """Bytes still free on the disk holding `folder`; None if the host cannot tell."""
        ...

    async def serves(self, record: _pidfile.PidRecord) -> bool:
        """False when what answers at the record's URL is another process (another
        RBEE_HOME's daemon won the port); True when it is the daemon, or if unknown."""
        ...

    async def stop(
        self, record: _pidfile.PidRecord, *, grace: float = STOP_GRACE_S
    ) -> StopResult | None:
        """SIGTERM the daemon's process group, SIGKILL after `grace` s; None if gone."""
        ...


class LocalHost:
    """This machine: processes via `daemons._pidfile`, pidfiles under `run_dir`."""

    name = "localhost"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    async def spawn(self, daemon: Daemon) -> _pidfile.PidRecord:
        pid = _pidfile.spawn_detached(daemon.argv, log_path=daemon.log_path, env=daemon.env)
        return record_for(daemon, pid)

    async def read_log(self, path: Path, offset: int) -> bytes:
        try:
            with path.open("rb") as f:
                f.seek(offset)
                return f.read(TAIL_CHUNK)
        except FileNotFoundError:
            return b""

    async def rotate_log(self, path: Path) -> None:
        _rotate(path)  # a rename on a local disk: not worth a thread

    async def log_size(self, path: Path) -> int:
        try:
            return path.stat().st_size  # noqa: ASYNC240 - a stat on a local disk
        except FileNotFoundError:
            return 0

    async def exit_code(self, pid: int) -> int | None:
        return _pidfile.reap(pid)

    def pidfile(self, name: str) -> _pidfile.PidFile:
        return _pidfile.PidFile(self.run_dir, name)

    async def read_record(self, name: str) -> _pidfile.PidRecord | None:
        return self.pidfile(name).read()

    async def write_record(self, record: _pidfile.PidRecord) -> None:
        self.pidfile(record.name).write(record)

    async def remove_record(self, name: str) -> None:
        self.pidfile(name).remove()

    def log_origin(self, pid: int) -> str:
        return f"pid {pid}"

    async def unhealthy_reason(self, daemon: Daemon) -> str | None:
        return None

    async def is_alive(self, record: _pidfile.PidRecord) -> bool:
        return _pidfile.live_process(record) is not None

    async def serves(self, record: _pidfile.PidRecord) -> bool:
        return serves_here(record.pid, record.url)

    async def free_bytes(self, folder: Path) -> int | None:
        import jobs

        try:
            return jobs.free_bytes(folder)
        except OSError:
            return None

    async def stop(
        self, record: _pidfile.PidRecord, *, grace: float = STOP_GRACE_S
    ) -> StopResult | None:
        import anyio

        proc = _pidfile.live_process(record)
        if proc is None:
            return None
        return await anyio.to_thread.run_sync(lambda: _pidfile.stop_daemon(proc, grace=grace))


def serves_here(pid: int, url: str) -> bool:
    """Whether the local process listening on `url`'s port is `pid` (True if unknown)."""
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    owner = _pidfile.port_owner(port) if port is not None else None
    return owner is None or owner.pid == pid


def _rotate(path: Path) -> None:
    if path.exists():
        path.replace(path.with_suffix(".log.1"))


def record_for(daemon: Daemon, pid: int, *, log: str | None = None) -> _pidfile.PidRecord:
    """The pidfile record of `daemon` running as `pid` (its start time read now)."""
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        created = time.time()
    return _pidfile.PidRecord(
        name=daemon.name,
        pid=pid,
        create_time=created,
        url=daemon.url,
        log=log or str(daemon.log_path),
        argv=daemon.argv,
    )
