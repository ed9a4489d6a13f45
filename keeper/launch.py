"""Starting and stopping a daemon (the queen, a hive) on a host, narrating as it goes.

    daemon = Daemon("hive-localhost", "rbee-hive", argv, url=url, log_path=log, env=env)
    record = anyio.run(start_detached, LocalHost(paths.run), daemon, 30.0)

A detached start spawns the daemon in its own session with stdout and stderr appended to
its log, records a pidfile (pid, start time, URL, log), and tails the log through the
same line splitter and relay as a piped child, so the startup narration appears live
with the daemon's own actors, until `/health` answers (`JobClient.health`). A daemon that
exits first, or is not healthy in time, is stopped and its pidfile removed, and the error
points at its last lines. The daemon never holds a pipe to a keeper that has exited.

Everything that touches the machine goes through a `Host`: `LocalHost` here, and
`keeper.remote.SshHost`, which does the same over asyncssh (same calls, same narration).
The caller holds the start lock (`keeper.daemons.start_lock`) around the whole sequence.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio

from keeper import daemons, stopping
from keeper.daemon_log import TAIL_CHUNK, LogTail
from keeper.errors import JobFailed, how_it_ended
from narration_core import Narrator
from narration_core.proctree import STOP_GRACE_S, StopResult

POLL_S = 0.05  # seconds between looks at the log and the child while starting
HEALTH_EVERY_S = 0.2  # seconds between /health probes while starting
HEALTH_TIMEOUT_S = 1.0  # one probe; a daemon still importing may not accept yet
FREE_SOME_SPACE = "free some space there and start it again"
ABANDON_GRACE_S = 1.0  # SIGTERM to SIGKILL for a daemon whose start was interrupted

NARRATE = Narrator("keeper")


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

    async def spawn(self, daemon: Daemon) -> daemons.PidRecord:
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

    def pidfile(self, name: str) -> daemons.PidFile:
        """The local pidfile of `name` (a foreground start; local hosts only)."""
        ...

    async def read_record(self, name: str) -> daemons.PidRecord | None:
        """The pidfile record of the daemon `name` on this host; None if none."""
        ...

    async def write_record(self, record: daemons.PidRecord) -> None: ...

    async def remove_record(self, name: str) -> None: ...

    def log_origin(self, pid: int) -> str:
        """The origin the daemon's relayed log lines get (`pid 123`, `ssh:gpu1`)."""
        ...

    async def unhealthy_reason(self, daemon: Daemon) -> str | None:
        """Why a running daemon's /health does not answer from here, if the host can tell."""
        ...

    async def is_alive(self, record: daemons.PidRecord) -> bool:
        """True when the process the record names still runs (not a reused pid)."""
        ...

    async def free_bytes(self, folder: Path) -> int | None:
        """Bytes still free on the disk holding `folder`; None if the host cannot tell."""
        ...

    async def serves(self, record: daemons.PidRecord) -> bool:
        """False when what answers at the record's URL is another process (another
        RBEE_HOME's daemon won the port); True when it is the daemon, or if unknown."""
        ...

    async def stop(
        self, record: daemons.PidRecord, *, grace: float = STOP_GRACE_S
    ) -> StopResult | None:
        """SIGTERM the daemon's process group, SIGKILL after `grace` s; None if gone."""
        ...


class LocalHost:
    """This machine: processes via `keeper.daemons`, pidfiles under `run_dir`."""

    name = "localhost"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    async def spawn(self, daemon: Daemon) -> daemons.PidRecord:
        pid = daemons.spawn_detached(daemon.argv, log_path=daemon.log_path, env=daemon.env)
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
        return daemons.reap(pid)

    def pidfile(self, name: str) -> daemons.PidFile:
        return daemons.PidFile(self.run_dir, name)

    async def read_record(self, name: str) -> daemons.PidRecord | None:
        return self.pidfile(name).read()

    async def write_record(self, record: daemons.PidRecord) -> None:
        self.pidfile(record.name).write(record)

    async def remove_record(self, name: str) -> None:
        self.pidfile(name).remove()

    def log_origin(self, pid: int) -> str:
        return f"pid {pid}"

    async def unhealthy_reason(self, daemon: Daemon) -> str | None:
        return None

    async def is_alive(self, record: daemons.PidRecord) -> bool:
        return daemons.live_process(record) is not None

    async def serves(self, record: daemons.PidRecord) -> bool:
        return _serves(record.pid, record.url)

    async def free_bytes(self, folder: Path) -> int | None:
        import jobs

        try:
            return jobs.free_bytes(folder)
        except OSError:
            return None

    async def stop(
        self, record: daemons.PidRecord, *, grace: float = STOP_GRACE_S
    ) -> StopResult | None:
        proc = daemons.live_process(record)
        if proc is None:
            return None
        return await anyio.to_thread.run_sync(lambda: daemons.stop_daemon(proc, grace=grace))


def start(
    host: Host,
    daemon: Daemon,
    *,
    label: str,
    timeout_s: float,
    foreground: bool,
    release: Callable[[], None],
    status: Callable[[str | None], None],
) -> None:
    """Start `daemon` detached (or attached with `foreground`) and narrate that it is ready.

    Call it holding the start lock; `release` drops the lock once an attached daemon is
    healthy and recorded, `status` is the renderer's spinner text. Blocks (anyio.run).
    """
    said = label[:1].upper() + label[1:]
    url = daemon.url
    if not foreground:
        record = anyio.run(start_detached, host, daemon, timeout_s)
        NARRATE.action("ready").target(url).human(
            f"{said} is ready at {url} (pid {record.pid}); `keeper {label.split()[0]} logs` "
            "shows its log"
        ).emit()
        return

    def ready(pid: int) -> None:
        release()  # healthy and in the pidfile: another start now finds it
        status(f"{daemon.program} running at {url}; Ctrl-C stops it")
        NARRATE.action("ready").target(url).human(
            f"{said} is ready at {url} (pid {pid}); Ctrl-C stops it"
        ).emit()

    if anyio.run(run_foreground, daemon, host.pidfile(daemon.name), timeout_s, ready):
        raise KeyboardInterrupt  # stopped by Ctrl-C/SIGTERM, its tree gone: exit 130


async def start_detached(host: Host, daemon: Daemon, timeout_s: float) -> daemons.PidRecord:
    """Spawn `daemon` on `host`, relay its log until /health answers; returns its record.

    Raises JobFailed (the daemon stopped, pidfile removed) when it exits before it is
    healthy or is not healthy within `timeout_s`.
    """
    await host.rotate_log(daemon.log_path)
    NARRATE.action("spawn").target(daemon.program).human(
        f"Starting {daemon.program}; log: {daemon.log_path}"
    ).emit()
    try:
        record = await host.spawn(daemon)
    except OSError as exc:  # the log could not be opened: nothing started
        raise JobFailed(_cannot_write(daemon, daemon.log_path, exc)) from exc
    try:
        await host.write_record(record)
    except OSError as exc:  # a daemon nobody can find or stop is worse than none
        await host.stop(record)
        raise JobFailed(_cannot_write(daemon, host.pidfile(daemon.name).path, exc)) from exc
    tail = LogTail(
        host, daemon.log_path, program=daemon.program, origin=host.log_origin(record.pid)
    )
    code: int | None = None
    ready = False
    try:
        with anyio.move_on_after(timeout_s):
            code, ready = await _watch(host, daemon, record, tail)
    except anyio.get_cancelled_exc_class():  # Ctrl-C: a start given up leaves no daemon
        from keeper.supervise import live_stop_signals

        # Not serving yet, it has no jobs to end: a short grace, during which a second
        # Ctrl-C is held back (it would end the keeper and leave the daemon half-stopped).
        with anyio.CancelScope(shield=True), anyio.open_signal_receiver(*live_stop_signals()):
            NARRATE.action("stop").target(record.pid).human(
                f"Start interrupted; stopping {daemon.program} (pid {record.pid})"
            ).emit()
            await host.stop(record, grace=ABANDON_GRACE_S)
            await host.remove_record(daemon.name)
        raise
    finally:
        await tail.drain()
    if ready:
        return record
    if code is None:  # still running but never healthy: do not leave it half-alive
        reason = await host.unhealthy_reason(daemon)
        await host.stop(record)
        await host.remove_record(daemon.name)
        reason = reason or f"its last lines are above and in {daemon.log_path}"
        raise JobFailed(
            f"{daemon.program} did not become healthy at {daemon.url} within {timeout_s:g} s "
            f"and was stopped; {reason}"
        )
    await host.remove_record(daemon.name)
    from jobs import MIN_FREE_BYTES  # below it a daemon cannot open its job table

    ended = f"{daemon.program} {how_it_ended(code)} before it was ready"
    folder = daemon.log_path.parent
    free = await host.free_bytes(folder)
    if free is not None and free < MIN_FREE_BYTES:  # its log may hold nothing to show
        raise JobFailed(f"{ended}: the disk holding {folder} is full; {FREE_SOME_SPACE}")
    raise JobFailed(f"{ended}; its last lines are above and in {daemon.log_path}")


def _cannot_write(daemon: Daemon, path: Path, exc: OSError) -> str:
    """Why `daemon` could not be started when writing `path` failed, in one sentence."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"{daemon.program} was not started: the disk holding {path.parent} is full; "
            f"{FREE_SOME_SPACE}"
        )
    return (
        f"{daemon.program} was not started: cannot write {path} ({exc.strerror or exc}); "
        "check that folder, then start it again"
    )


async def run_foreground(
    daemon: Daemon, pidfile: daemons.PidFile, timeout_s: float, on_ready: Callable[[int], None]
) -> bool:
    """Run `daemon` attached (its pipes captured, relayed live) until it exits or Ctrl-C
    stops it; `on_ready(pid)` runs once it is healthy (release the start lock, narrate).

    Returns True when a stop signal ended it (a second one kills its tree at once, as in
    `keeper run`). Raises JobFailed when it does not become healthy in time or exits
    with an error.
    """
    from keeper.supervise import open_stop_signals
    from narration_core.capture import ProcessNarrationCapture

    capture = ProcessNarrationCapture(actor=daemon.program)
    exit_codes: list[int] = []
    stopped = False

    def stopping(sig: object) -> None:
        NARRATE.action("stop").human(
            f"Stopping {daemon.program}; a second Ctrl-C or signal kills it at once"
        ).emit()

    with open_stop_signals() as stops:  # before the spawn: no signal cancels it half-way
        proc = await capture.spawn(daemon.argv, env=daemon.env)
        try:
            async with proc:
                try:  # inside `async with proc`: a failure stops the daemon just spawned
                    pidfile.write(record_for(daemon, proc.pid, log=os.devnull))
                except OSError as exc:
                    raise JobFailed(_cannot_write(daemon, pidfile.path, exc)) from exc
                async with anyio.create_task_group() as tg:

                    async def wait_exit() -> None:
                        nonlocal stopped
                        code, signalled = await stops.wait(proc, on_stop=stopping)
                        exit_codes.append(code)
                        stopped = signalled is not None
                        tg.cancel_scope.cancel()

                    tg.start_soon(wait_exit)

                    async def ours() -> bool:
                        return _serves(proc.pid, daemon.url)

                    with anyio.fail_after(timeout_s):
                        await _wait_healthy(daemon, exited=lambda: None, confirm=ours)
                    on_ready(proc.pid)
                    await anyio.sleep_forever()
        except TimeoutError:
            raise JobFailed(
                f"{daemon.program} did not become healthy at {daemon.url} within {timeout_s:g} s"
            ) from None
        finally:
            pidfile.remove()
    if stopped:
        return True
    if exit_codes and exit_codes[0] != 0:
        raise JobFailed(f"{daemon.program} {how_it_ended(exit_codes[0])}")
    return False


async def stop(
    host: Host,
    name: str,
    *,
    label: str,
    if_not_running: Callable[[], None] | None = None,
) -> StopResult | None:
    """Stop the daemon `name`'s pidfile names, narrating as `label` (`queen`, `hive gpu1`).

    Returns None when it was not running (a stale pidfile is removed and said so), after
    calling `if_not_running` (which may raise: say whose daemon answers instead).
    `stopping.stop_local` is the blocking twin for this machine.
    """
    record = await host.read_record(name)
    if record is None or not await host.is_alive(record):
        await host.remove_record(name)
        if if_not_running is not None:
            if_not_running()
        stopping.say_not_running(label, record)
        return None
    stopping.say_stopping(label, record)
    result = await host.stop(record)
    await host.remove_record(name)
    stopping.say_stopped(label, record, result)
    return result


async def _watch(
    host: Host, daemon: Daemon, record: daemons.PidRecord, tail: LogTail
) -> tuple[int | None, bool]:
    """Relay the log while probing /health: (exit code, False) if it exited, (None, True)
    once healthy."""
    code: list[int] = []

    def exited() -> int | None:
        return code[0] if code else None

    async def look() -> None:
        await tail.pump()
        if not code and (found := await host.exit_code(record.pid)) is not None:
            code.append(found)

    async def ours() -> bool:
        return await host.serves(record)

    healthy = await _wait_healthy(daemon, exited=exited, between=look, confirm=ours)
    return exited(), healthy


async def _wait_healthy(
    daemon: Daemon,
    *,
    exited: Callable[[], int | None],
    between: Callable[[], Awaitable[None]] | None = None,
    confirm: Callable[[], Awaitable[bool]] | None = None,
) -> bool:
    """Probe /health every HEALTH_EVERY_S (calling `between` every POLL_S); True once it
    answers 200 and `confirm()` agrees that the answer is the daemon's own, False as soon
    as `exited()` reports an exit."""
    from jobs import JobError
    from jobs.client import JobClient

    next_probe = 0.0
    async with JobClient(daemon.url, timeout_s=HEALTH_TIMEOUT_S) as client:
        while True:
            if between is not None:
                await between()
            if exited() is not None:
                return False
            now = time.monotonic()
            if now >= next_probe:
                next_probe = now + HEALTH_EVERY_S
                try:
                    await client.health()
                except JobError:
                    pass  # not listening yet, or not ready to serve
                else:
                    if confirm is None or await confirm():
                        return True  # else another home's daemon got the port first
            await anyio.sleep(POLL_S)


def _serves(pid: int, url: str) -> bool:
    """Whether the local process listening on `url`'s port is `pid` (True if unknown)."""
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    owner = daemons.port_owner(port) if port is not None else None
    return owner is None or owner.pid == pid


def _rotate(path: Path) -> None:
    if path.exists():
        path.replace(path.with_suffix(".log.1"))


def record_for(daemon: Daemon, pid: int, *, log: str | None = None) -> daemons.PidRecord:
    """The pidfile record of `daemon` running as `pid` (its start time read now)."""
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        created = time.time()
    return daemons.PidRecord(
        name=daemon.name,
        pid=pid,
        create_time=created,
        url=daemon.url,
        log=log or str(daemon.log_path),
        argv=daemon.argv,
    )
