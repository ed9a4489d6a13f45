"""A daemon's lifecycle on any host: start it detached and narrate its startup until it is
healthy, stop it by its pidfile, and say so in the same words whoever asked.

    record = await start_detached(host, daemon, 30.0, narrate=Narrator("keeper"))
    await stop(host, "hive-localhost", label="hive localhost", narrate=NARRATE)

A detached start rotates the daemon's log, spawns it in its own session with its output
appended there, records a pidfile (pid, start time, URL, log) and tails the log through
`LogTail` while probing `/health` (`wait_healthy`), so its startup narration appears live
under its own actors: on the keeper's terminal, or in the queen's job when the queen
starts a hive from the dashboard. A daemon that exits first, or is not healthy in time,
is stopped, its pidfile removed, and StartFailed points at its last lines.

`narrate` is the caller's narrator (`keeper`, `queen-rbee`): the caller's actor says what
it did, the daemon's own lines keep theirs. The caller holds the start lock
(`start_lock` or `hold_start_lock`) around `ensure_running`.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from daemons import _pidfile
from daemons._errors import PortTaken, StartFailed
from daemons._host import Daemon, Host
from daemons._logtail import LogTail
from narration_core import Narrator
from narration_core.proctree import StopResult

POLL_S = 0.05  # seconds between looks at the log and the child while starting
HEALTH_EVERY_S = POLL_S  # between /health probes while starting: found ready within 50 ms
HEALTH_TIMEOUT_S = 1.0  # one probe; a daemon still importing may not accept yet
FREE_SOME_SPACE = "free some space there and start it again"
ABANDON_GRACE_S = 1.0  # SIGTERM to SIGKILL for a daemon whose start was interrupted

Guard = Callable[[], AbstractContextManager[Any]]


class Running(NamedTuple):
    """A running daemon's record, and whether this call started it (else it already ran)."""

    record: _pidfile.PidRecord
    started: bool


async def ensure_running(
    host: Host,
    daemon: Daemon,
    *,
    label: str,
    timeout_s: float,
    narrate: Narrator,
    start_hint: str,
    bind: str | None = None,
    state_dir: Path | None = None,
    asked_port: int | None = None,
    interrupt_guard: Guard = contextlib.nullcontext,
) -> Running:
    """The daemon running: the one already running (said so), else started detached.

    The refusals are `already_running`'s (StartFailed, PortTaken).
    """
    record = await already_running(
        host,
        daemon,
        label=label,
        narrate=narrate,
        start_hint=start_hint,
        bind=bind,
        state_dir=state_dir,
        asked_port=asked_port,
    )
    if record is not None:
        return Running(record, started=False)
    record = await start_detached(
        host, daemon, timeout_s, narrate=narrate, interrupt_guard=interrupt_guard
    )
    return Running(record, started=True)


async def already_running(
    host: Host,
    daemon: Daemon,
    *,
    label: str,
    narrate: Narrator,
    start_hint: str,
    bind: str | None = None,
    state_dir: Path | None = None,
    asked_port: int | None = None,
) -> _pidfile.PidRecord | None:
    """The record of this home's `daemon` when it already runs (said so); None when it may
    be started (a stale pidfile is removed).

    Refuses (StartFailed) a daemon of this home running on another port than `asked_port`,
    and (PortTaken) a local port (`bind` given: this machine, `state_dir` this home's
    state folder) that another program holds, naming it and `start_hint` (the command
    that starts this daemon) with a free port.
    """
    record = await host.read_record(daemon.name)
    if record is not None:
        if await host.is_alive(record):
            if asked_port is not None and urlsplit(record.url).port != asked_port:
                raise StartFailed(
                    f"{label} of this RBEE_HOME already runs at {record.url} (pid {record.pid}), "
                    f"not on port {asked_port}; use it, or move it with `{_stop_hint(start_hint)}` "
                    f"then `{start_hint} --port {asked_port}`"
                )
            narrate.action("already_running").target(record.url).human(
                f"{_sentence(label)} is already running (pid {record.pid}) at {record.url}"
            ).emit()
            return record
        await host.remove_record(daemon.name)
    port = urlsplit(daemon.url).port
    if bind is not None and port is not None and _pidfile.port_in_use(bind, port):
        owner = _pidfile.port_owner(port)
        ours = state_dir or daemon.log_path.parent
        raise PortTaken(_pidfile.port_taken(bind, port, owner, ours, start=start_hint))
    return None


def _stop_hint(start_hint: str) -> str:
    """`keeper hive stop gpu1` for `keeper hive start gpu1`."""
    return start_hint.replace(" start", " stop", 1)


async def start_detached(
    host: Host,
    daemon: Daemon,
    timeout_s: float,
    *,
    narrate: Narrator,
    interrupt_guard: Guard = contextlib.nullcontext,
) -> _pidfile.PidRecord:
    """Spawn `daemon` on `host`, relay its log until /health answers; returns its record.

    Raises StartFailed (the daemon stopped, pidfile removed) when it exits before it is
    healthy or is not healthy within `timeout_s`. Cancelled (Ctrl-C, a cancelled job), it
    stops the daemon it started under `interrupt_guard` (the keeper holds back a second
    Ctrl-C there) and re-raises.
    """
    import anyio

    await host.rotate_log(daemon.log_path)
    narrate.action("spawn").target(daemon.program).human(
        f"Starting {daemon.program}; log: {daemon.log_path}"
    ).emit()
    try:
        record = await host.spawn(daemon)
    except OSError as exc:  # the log could not be opened: nothing started
        raise StartFailed(cannot_write(daemon, daemon.log_path, exc)) from exc
    try:
        await host.write_record(record)
    except OSError as exc:  # a daemon nobody can find or stop is worse than none
        await host.stop(record)
        raise StartFailed(cannot_write(daemon, host.pidfile(daemon.name).path, exc)) from exc
    tail = LogTail(
        host, daemon.log_path, program=daemon.program, origin=host.log_origin(record.pid)
    )
    code: int | None = None
    ready = False
    try:
        with anyio.move_on_after(timeout_s):
            code, ready = await _watch(host, daemon, record, tail)
    except anyio.get_cancelled_exc_class():  # a start given up leaves no daemon
        # Not serving yet, it has no jobs to end: a short grace.
        with anyio.CancelScope(shield=True), interrupt_guard():
            narrate.action("stop").target(record.pid).human(
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
        raise StartFailed(
            f"{daemon.program} did not become healthy at {daemon.url} within {timeout_s:g} s "
            f"and was stopped; {reason}"
        )
    await host.remove_record(daemon.name)
    from jobs import MIN_FREE_BYTES, how_it_ended  # below it a daemon cannot open its job table

    ended = f"{daemon.program} {how_it_ended(code)} before it was ready"
    folder = daemon.log_path.parent
    free = await host.free_bytes(folder)
    if free is not None and free < MIN_FREE_BYTES:  # its log may hold nothing to show
        raise StartFailed(f"{ended}: the disk holding {folder} is full; {FREE_SOME_SPACE}")
    raise StartFailed(f"{ended}; its last lines are above and in {daemon.log_path}")


def cannot_write(daemon: Daemon, path: Path, exc: OSError) -> str:
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


async def stop(
    host: Host,
    name: str,
    *,
    label: str,
    narrate: Narrator,
    if_not_running: Callable[[], None] | None = None,
) -> StopResult | None:
    """Stop the daemon `name`'s pidfile names, narrating as `label` (`queen`, `hive gpu1`).

    Returns None when it was not running (a stale pidfile is removed and said so), after
    calling `if_not_running` (which may raise: say whose daemon answers instead).
    """
    record = await host.read_record(name)
    if record is None or not await host.is_alive(record):
        await host.remove_record(name)
        if if_not_running is not None:
            if_not_running()
        say_not_running(narrate, label, record)
        return None
    say_stopping(narrate, label, record)
    result = await host.stop(record)
    await host.remove_record(name)
    say_stopped(narrate, label, record, result)
    return result


async def status(host: Host, name: str) -> _pidfile.PidRecord | None:
    """The record of the daemon `name` if it runs on `host` (not a stale pidfile), else None."""
    record = await host.read_record(name)
    if record is None or not await host.is_alive(record):
        return None
    return record


def say_not_running(narrate: Narrator, label: str, record: _pidfile.PidRecord | None) -> None:
    """The daemon was not running: no pidfile, or a stale one (already removed)."""
    narrate.action("not_running").human(
        f"{_sentence(label)} is not running (no pidfile)"
        if record is None
        else f"{_sentence(label)} was not running; removed the stale pidfile for pid {record.pid}"
    ).emit()


def say_stopping(narrate: Narrator, label: str, record: _pidfile.PidRecord) -> None:
    narrate.action("stop").target(record.pid).human(
        f"Stopping {label} (pid {record.pid}) with SIGTERM"
    ).emit()


def say_stopped(
    narrate: Narrator, label: str, record: _pidfile.PidRecord, result: StopResult | None
) -> None:
    """How the stop ended; `result` None: the daemon had exited before it was signalled."""
    said = _sentence(label)
    if result is None:
        narrate.action("stopped").target(record.pid).human(f"{said} had already exited").emit()
    elif result.killed:
        narrate.action("killed").level("warn").target(record.pid).human(
            f"{said} ignored SIGTERM for {result.seconds:.1f} s and was killed (SIGKILL)"
        ).emit()
    else:
        narrate.action("stopped").target(record.pid).human(
            f"{said} stopped (pid {record.pid}) in {_took(result.seconds)}"
        ).emit()


async def wait_healthy(
    daemon: Daemon,
    *,
    exited: Callable[[], int | None],
    between: Callable[[], Awaitable[None]] | None = None,
    confirm: Callable[[], Awaitable[bool]] | None = None,
) -> bool:
    """Probe /health every HEALTH_EVERY_S (calling `between` every POLL_S); True once it
    answers 200 and `confirm()` agrees that the answer is the daemon's own, False as soon
    as `exited()` reports an exit."""
    import anyio

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


async def _watch(
    host: Host, daemon: Daemon, record: _pidfile.PidRecord, tail: LogTail
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

    healthy = await wait_healthy(daemon, exited=exited, between=look, confirm=ours)
    return exited(), healthy


def _took(seconds: float) -> str:
    """`0.3 s`, or `12 ms` under a tenth: a prompt stop does not read as "0.0 s"."""
    return f"{seconds:.1f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"


def _sentence(label: str) -> str:
    """`label` at the start of a sentence (`queen` → `Queen`, `hive gpu1` → `Hive gpu1`)."""
    return label[:1].upper() + label[1:]
