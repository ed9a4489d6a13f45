"""Starting and stopping a daemon (the queen, a hive) on a host from the keeper: thin
adapters over the lifecycle library (`daemons`), narrating as `keeper`.

    daemon = daemons.local_hive(paths, "localhost", port=7835, queen_url=url)
    record = anyio.run(start_detached, LocalHost(paths.run), daemon, 30.0)

The library spawns the daemon detached, records its pidfile and tails its log until
`/health` answers (its startup narration appears live, with the daemon's own actors);
here its errors become the keeper's (exit codes), Ctrl-C during a start holds a second
Ctrl-C back while the half-started daemon is stopped, and a `--foreground` start keeps
the daemon attached (`run_foreground`).

`start_queen` and `start_local_hive` are the keeper's whole start of this home's queen
and local hive (the start lock, a lost pidfile adopted, already running or port taken,
the renderer's status line): `keeper queen start`, `keeper hive start` and the autostart
of `infer` and `worker spawn` all call them, so each rule has one copy.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import anyio

import daemons
from daemons import ABANDON_GRACE_S, Daemon, Host, LocalHost, record_for
from jobs import HIVE_PORT, LOOPBACK, QUEEN_PORT, RbeePaths, how_it_ended
from keeper import daemons as keeper_daemons
from keeper.errors import DaemonUnreachable, JobFailed, UsageError
from keeper.output import make_renderer
from keeper.settings import KeeperSettings
from narration_core import Narrator
from narration_core.proctree import StopResult

__all__ = [
    "ABANDON_GRACE_S",
    "Daemon",
    "Host",
    "LocalHost",
    "client_host",
    "hive_start_hint",
    "record_for",
    "run_foreground",
    "start",
    "start_detached",
    "start_local_hive",
    "start_queen",
    "stop",
]

NARRATE = Narrator("keeper")


@contextlib.contextmanager
def keeper_errors() -> Iterator[None]:
    """The library's errors as the keeper's: a port taken or an SSH failure is exit 3,
    the rest exit 1."""
    try:
        yield
    except (daemons.PortTaken, daemons.SshError) as exc:
        raise DaemonUnreachable(str(exc)) from exc
    except daemons.DaemonError as exc:
        raise JobFailed(str(exc)) from exc


@contextlib.contextmanager
def _second_ctrl_c_held() -> Iterator[None]:
    """While a half-started daemon is stopped, a second Ctrl-C would end the keeper and
    leave it half-stopped: hold stop signals back for that short grace."""
    from keeper.supervise import live_stop_signals

    with anyio.open_signal_receiver(*live_stop_signals()):
        yield


def start_queen(
    settings: KeeperSettings,
    *,
    port: int | None,
    bind: str,
    token: str | None,
    foreground: bool,
    timeout: float,
) -> None:
    """Start the queen unless this RBEE_HOME's queen already runs (then say where).

    `port` None means "the default, or wherever the queen already runs"; an explicit
    port that differs from the running queen's is an error (JobFailed, exit 1), so a
    script never goes on believing the queen listens where it asked.
    """
    asked_port = port
    port = QUEEN_PORT if port is None else port
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port; pick one between 1 and 65535")
    token = settings.token(token)
    if bind not in (LOOPBACK, "localhost", "::1") and not token:
        raise UsageError(
            f"binding the queen to {bind} exposes it beyond this machine and needs a token; "
            "pass --token or set RBEE_TOKEN"
        )
    paths = RbeePaths.resolve().ensure()
    url = f"http://{client_host(bind)}:{port}"
    daemon = daemons.local_queen(paths, port=port, bind=bind, url=url, token=token)
    host = LocalHost(paths.run)

    def waiting() -> None:
        NARRATE.action("wait_lock").human(
            "Another keeper is starting the queen of this RBEE_HOME; waiting for it"
        ).emit()

    with make_renderer(settings) as out:
        out.status(f"Starting {daemons.QUEEN_PROGRAM} on {bind}:{port}")
        # The whole sequence (look, rotate the log, spawn, pidfile, health) under one lock:
        # a racing keeper waits here, then finds this queen running.
        with daemons.start_lock(paths.run, daemons.QUEEN, on_wait=waiting) as release:
            from keeper.lost_pidfile import adopt

            # A queen whose pidfile is lost, on another port than this start's: found by
            # the state lock it holds, not spawned again (the log would be rotated away).
            adopt(paths.run, daemons.QUEEN, paths.state, log=daemon.log_path, label="queen")
            if _queen_runs(paths, daemon, bind, port, asked_port=asked_port):
                return
            start(
                host,
                daemon,
                label="queen",
                timeout_s=timeout,
                foreground=foreground,
                release=release,
                status=out.status,
            )


def _queen_runs(
    paths: RbeePaths, daemon: Daemon, bind: str, port: int, *, asked_port: int | None
) -> bool:
    """Say so and return True when this RBEE_HOME's queen already serves.

    Cleans a stale pidfile. Raises JobFailed when our queen runs on another port than
    the one asked for, DaemonUnreachable when the port is taken by anything else.
    """
    pidfile = keeper_daemons.PidFile(paths.run, daemons.QUEEN)
    record = pidfile.read()
    if record is not None:
        if keeper_daemons.live_process(record) is not None:
            running_port = urlsplit(record.url).port
            if asked_port is not None and running_port != asked_port:
                raise JobFailed(
                    f"the queen of this RBEE_HOME already runs at {record.url} "
                    f"(pid {record.pid}), not on port {asked_port}; use that URL, or move it "
                    f"with `keeper queen stop` then `keeper queen start --port {asked_port}`"
                )
            NARRATE.action("already_running").target(record.url).human(
                f"Queen is already running (pid {record.pid}) at {record.url}"
            ).emit()
            return True
        pidfile.remove()
        NARRATE.action("stale_pidfile").human(
            f"Removed a stale pidfile: pid {record.pid} is no longer the queen"
        ).emit()
    url = daemon.url
    if keeper_daemons.port_in_use(bind, port):
        owner = daemons.port_owner(port)
        if owner is not None and owner.state == paths.state:  # our queen, pidfile lost
            pidfile.write(record_for(daemon, owner.pid))
            NARRATE.action("already_running").target(url).human(
                f"Queen is already running (pid {owner.pid}) at {url}; its pidfile was missing "
                "and is written again"
            ).emit()
            return True
        raise DaemonUnreachable(daemons.port_taken(bind, port, owner, paths.state))
    return False


def client_host(bind: str) -> str:
    """Where a local client reaches a server bound to `bind`."""
    if bind in ("0.0.0.0", ""):
        return LOOPBACK
    if bind == "::":
        return "[::1]"
    return f"[{bind}]" if ":" in bind else bind


def start_local_hive(
    settings: KeeperSettings,
    alias: str,
    *,
    port: int | None,
    foreground: bool,
    timeout: float,
    beat_interval: float | None = None,
    any_port_if_running: bool = False,
    lend_bytes: int | None = None,
) -> None:
    """Start this machine's hive `alias` beating to the keeper's queen, unless this home's
    runs (then say where, and that a `lend_bytes` asked for is not applied to it); stream
    its startup until healthy.

    A `port` given for a hive that already runs elsewhere is an error (JobFailed), as for
    the queen, unless `any_port_if_running` (autostart: any running hive will do).
    """
    asked_port = None if any_port_if_running else port
    port = HIVE_PORT if port is None else port
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port; pick one between 1 and 65535")
    paths = RbeePaths.resolve().ensure()
    daemon = daemons.local_hive(
        paths,
        alias,
        port=port,
        queen_url=settings.queen_url,
        beat_interval=beat_interval,
        lend_bytes=lend_bytes,
    )
    host = LocalHost(paths.run)
    label = f"hive {alias}"

    def waiting() -> None:
        NARRATE.action("wait_lock").human(
            f"Another keeper is starting hive {alias} of this RBEE_HOME; waiting for it"
        ).emit()

    with make_renderer(settings) as out:
        out.status(f"Starting {daemons.HIVE_PROGRAM} {alias} on {LOOPBACK}:{port}")
        with daemons.start_lock(paths.run, daemon.name, on_wait=waiting) as release:
            from keeper.lost_pidfile import adopt

            adopt(
                paths.run, daemon.name, paths.state / daemon.name, log=daemon.log_path, label=label
            )
            with keeper_errors():
                running = anyio.run(
                    functools.partial(
                        daemons.already_running,
                        host,
                        daemon,
                        label=label,
                        narrate=NARRATE,
                        start_hint=hive_start_hint(alias),
                        bind=LOOPBACK,
                        state_dir=paths.state,
                        asked_port=asked_port,
                    )
                )
            if running is not None:
                if lend_bytes is not None:
                    NARRATE.action("lend_memory").target(alias).level("warn").human(
                        f"Hive {alias} already runs, so --lend-memory does not change what "
                        f"it lends; stop it (`keeper hive stop {alias}`) and start it again"
                    ).emit()
                return
            start(
                host,
                daemon,
                label=label,
                timeout_s=timeout,
                foreground=foreground,
                release=release,
                status=out.status,
            )


def hive_start_hint(alias: str) -> str:
    """The command that starts hive `alias` (for hints): the bare one for localhost."""
    return "keeper hive start" if alias == daemons.LOCAL else f"keeper hive start {alias}"


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
    with keeper_errors():
        return await daemons.start_detached(
            host, daemon, timeout_s, narrate=NARRATE, interrupt_guard=_second_ctrl_c_held
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
                    raise JobFailed(daemons.cannot_write(daemon, pidfile.path, exc)) from exc
                async with anyio.create_task_group() as tg:

                    async def wait_exit() -> None:
                        nonlocal stopped
                        code, signalled = await stops.wait(proc, on_stop=stopping)
                        exit_codes.append(code)
                        stopped = signalled is not None
                        tg.cancel_scope.cancel()

                    tg.start_soon(wait_exit)

                    async def ours() -> bool:
                        return daemons.serves_here(proc.pid, daemon.url)

                    with anyio.fail_after(timeout_s):
                        await daemons.wait_healthy(daemon, exited=lambda: None, confirm=ours)
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
    """Stop the daemon `name`'s pidfile names, narrating as `label` (`queen`, `hive gpu1`);
    None when it was not running. `stopping.stop_local` is the blocking twin for this
    machine."""
    return await daemons.stop(
        host, name, label=label, narrate=NARRATE, if_not_running=if_not_running
    )
