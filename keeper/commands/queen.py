"""`keeper queen start|stop|status|logs` and `keeper status`.

Start (detached): the queen runs in its own session with stdout and stderr appended to
`logs/queen.log`; the keeper tails that file through the same splitter and relay as a
piped child, so the startup narration appears live, and stops watching once `/health`
answers. `--foreground` captures the queen's pipes instead and stops it on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from jobs.paths import LOOPBACK, TOKEN_ENV, RbeePaths
from keeper import daemons
from keeper.errors import DaemonUnreachable, JobFailed, UsageError
from keeper.render import make_renderer
from keeper.settings import KeeperSettings
from narration_core import LineSplitter, Narrator, relay_lines

NAME = "queen"
PROGRAM = "queen-rbee"
POLL_S = 0.05  # seconds between looks at the log file and the child while starting
HEALTH_EVERY_S = 0.2  # seconds between /health probes while starting
TAIL_CHUNK = 256 * 1024  # bytes read from the log per look

NARRATE = Narrator("keeper")


def start(
    settings: KeeperSettings,
    *,
    port: int,
    bind: str,
    token: str | None,
    foreground: bool,
    timeout: float,
) -> None:
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is not a TCP port; pick one between 1 and 65535")
    if bind not in (LOOPBACK, "localhost", "::1") and not token:
        raise UsageError(
            f"binding the queen to {bind} exposes it beyond this machine and needs a token; "
            "pass --token or set RBEE_TOKEN"
        )
    paths = RbeePaths.resolve().ensure()
    url = f"http://{_client_host(bind)}:{port}"
    argv = [sys.executable, "-m", "queen", "--port", str(port), "--bind", bind]
    env = dict(os.environ)
    if token:
        env[TOKEN_ENV] = token  # in the environment, not argv: argv is visible in `ps`
    with make_renderer(settings) as out:
        out.status(f"Starting {PROGRAM} on {bind}:{port}")
        if _already_running(paths, url, bind, port):
            return
        if foreground:
            anyio.run(_run_foreground, paths, argv, env, url, timeout)
        else:
            anyio.run(_start_detached, paths, argv, env, url, timeout)


def _already_running(paths: RbeePaths, url: str, bind: str, port: int) -> bool:
    """Say so and return True when a queen already serves; clean a stale pidfile."""
    pidfile = daemons.PidFile(paths.run, NAME)
    record = pidfile.read()
    if record is not None:
        if daemons.live_process(record) is not None:
            NARRATE.action("already_running").target(record.url).human(
                f"Queen is already running (pid {record.pid}) at {record.url}"
            ).emit()
            return True
        pidfile.remove()
        NARRATE.action("stale_pidfile").human(
            f"Removed a stale pidfile: pid {record.pid} is no longer the queen"
        ).emit()
    if daemons.port_in_use(bind, port):
        if _health(url) is not None:
            NARRATE.action("already_running").target(url).human(
                f"A queen is already answering at {url} (not started by this keeper)"
            ).emit()
            return True
        raise DaemonUnreachable(
            f"port {port} on {bind} is taken by another program; stop it or pass --port"
        )
    return False


async def _start_detached(
    paths: RbeePaths, argv: list[str], env: dict[str, str], url: str, startup_s: float
) -> None:
    log_path = paths.logs / f"{NAME}.log"
    if log_path.exists():  # one log per start; the previous run's stays as queen.log.1
        log_path.replace(log_path.with_suffix(".log.1"))
    offset = 0
    NARRATE.action("spawn").target(PROGRAM).human(f"Starting {PROGRAM}; log: {log_path}").emit()
    pid = daemons.spawn_detached(argv, log_path=log_path, env=env)
    pidfile = daemons.PidFile(paths.run, NAME)
    pidfile.write(_record(pid, url, log_path, argv))
    tail = _LogTail(log_path, offset, origin=f"pid {pid}")
    exit_codes: list[int] = []

    def exited() -> int | None:
        if not exit_codes and (code := daemons.reap(pid)) is not None:
            exit_codes.append(code)
        return exit_codes[0] if exit_codes else None

    ready = False
    try:
        with anyio.fail_after(startup_s):
            ready = await _watch_until_healthy(url, tail, exited=exited)
    except TimeoutError:
        pass
    finally:
        tail.drain()
    if ready:
        NARRATE.action("ready").target(url).human(
            f"Queen is ready at {url} (pid {pid}); `keeper queen logs` shows its log"
        ).emit()
        return
    code = exited()
    if code is None:  # still running but never healthy: do not leave it half-alive
        proc = daemons.live_process(pidfile.read() or _record(pid, url, log_path, argv))
        if proc is not None:
            daemons.stop_daemon(proc)
        pidfile.remove()
        raise JobFailed(
            f"{PROGRAM} did not become healthy at {url} within {startup_s:g} s and was stopped; "
            f"its last lines are above and in {log_path}"
        )
    pidfile.remove()
    raise JobFailed(
        f"{PROGRAM} exited with code {code} before it was ready; "
        f"its last lines are above and in {log_path}"
    )


async def _run_foreground(
    paths: RbeePaths, argv: list[str], env: dict[str, str], url: str, startup_s: float
) -> None:
    from narration_core.capture import ProcessNarrationCapture

    pidfile = daemons.PidFile(paths.run, NAME)
    capture = ProcessNarrationCapture(actor=PROGRAM)
    proc = await capture.spawn(argv, env=env)
    pidfile.write(_record(proc.pid, url, Path(os.devnull), argv))
    try:
        async with proc, anyio.create_task_group() as tg:
            exit_code: list[int] = []

            async def relay() -> None:
                exit_code.append(await proc.wait())
                tg.cancel_scope.cancel()

            tg.start_soon(relay)
            with anyio.fail_after(startup_s):
                await _watch_until_healthy(url, None, exited=lambda: None)
            NARRATE.action("ready").target(url).human(
                f"Queen is ready at {url} (pid {proc.pid}); Ctrl-C stops it"
            ).emit()
            await anyio.sleep_forever()
        if exit_code and exit_code[0] != 0:
            raise JobFailed(f"{PROGRAM} exited with code {exit_code[0]}", exit_code=1)
    except TimeoutError:
        raise JobFailed(
            f"{PROGRAM} did not become healthy at {url} within {startup_s:g} s"
        ) from None
    finally:
        pidfile.remove()


async def _watch_until_healthy(
    url: str, tail: _LogTail | None, *, exited: Callable[[], int | None]
) -> bool:
    """Relay the log while probing /health; True once healthy, False if the child exited."""
    import httpx

    next_probe = 0.0
    async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
        while True:
            if tail is not None:
                tail.pump()
            if exited() is not None:
                return False
            now = time.monotonic()
            if now >= next_probe:
                next_probe = now + HEALTH_EVERY_S
                try:
                    response = await client.get(f"{url}/health")
                    if response.status_code == 200:
                        return True
                except httpx.TransportError:
                    pass  # not listening yet
            await anyio.sleep(POLL_S)


class _LogTail:
    """Reads what a daemon appends to its log and relays it line by line."""

    def __init__(self, path: Path, offset: int, *, origin: str) -> None:
        self.path = path
        self.offset = offset
        self.origin = origin
        self.splitter = LineSplitter()

    def pump(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                while data := f.read(TAIL_CHUNK):
                    self.offset += len(data)
                    relay_lines(
                        self.splitter.feed(data), "stdout", actor=PROGRAM, origin=self.origin
                    )
        except FileNotFoundError:
            return

    def drain(self) -> None:
        self.pump()
        relay_lines(self.splitter.flush(), "stdout", actor=PROGRAM, origin=self.origin)


def _record(pid: int, url: str, log_path: Path, argv: list[str]) -> daemons.PidRecord:
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        created = time.time()
    return daemons.PidRecord(
        name=NAME, pid=pid, create_time=created, url=url, log=str(log_path), argv=argv
    )


def _client_host(bind: str) -> str:
    """Where a local client reaches a server bound to `bind`."""
    if bind in ("0.0.0.0", ""):
        return LOOPBACK
    if bind == "::":
        return "[::1]"
    return f"[{bind}]" if ":" in bind else bind


# -- stop / status / logs ------------------------------------------------------------


def stop(settings: KeeperSettings) -> None:
    paths = RbeePaths.resolve()
    pidfile = daemons.PidFile(paths.run, NAME)
    with make_renderer(settings):
        record = pidfile.read()
        if record is None:
            NARRATE.action("not_running").human("Queen is not running (no pidfile)").emit()
            return
        proc = daemons.live_process(record)
        if proc is None:
            pidfile.remove()
            NARRATE.action("not_running").human(
                f"Queen was not running; removed the stale pidfile for pid {record.pid}"
            ).emit()
            return
        NARRATE.action("stop").target(record.pid).human(
            f"Stopping queen (pid {record.pid}) with SIGTERM"
        ).emit()
        result = daemons.stop_daemon(proc)
        pidfile.remove()
        if result.killed:
            NARRATE.action("killed").level("warn").target(record.pid).human(
                f"Queen ignored SIGTERM for {result.seconds:.1f} s and was killed (SIGKILL)"
            ).emit()
        else:
            NARRATE.action("stopped").target(record.pid).human(
                f"Queen stopped (pid {record.pid}) in {result.seconds:.1f} s"
            ).emit()


def status(settings: KeeperSettings) -> None:
    """Print the queen's state; exit 3 (DaemonUnreachable) when it is not running."""
    paths = RbeePaths.resolve()
    record = daemons.PidFile(paths.run, NAME).read()
    proc = daemons.live_process(record) if record is not None else None
    ours = record if proc is not None else None  # the pidfile names a live queen
    url = record.url if record is not None else settings.queen_url
    health = _health(url) if ours is not None or record is None else None
    running = ours is not None or health is not None
    uptime_s = round(time.time() - ours.create_time, 1) if ours is not None else None
    version = (health or {}).get("version")
    if settings.json:
        info = {
            "running": running,
            "pid": ours.pid if ours is not None else None,
            "url": url,
            "uptime_s": uptime_s,
            "version": version,
            "healthy": health is not None,
            "log": record.log if record is not None else str(paths.logs / f"{NAME}.log"),
        }
        sys.stdout.write(json.dumps(info) + "\n")
    else:
        with make_renderer(settings):
            if running:
                uptime = _duration(uptime_s) if uptime_s is not None else "?"
                pid = ours.pid if ours is not None else "not ours"
                NARRATE.action("status").target(url).human(
                    f"Queen is running: pid {pid}, {url}, up {uptime}, version {version}"
                    + ("" if health is not None else ", NOT answering /health")
                ).emit()
            else:
                NARRATE.action("status").target(url).human(
                    "Queen is not running; start it with `keeper queen start`"
                ).emit()
    if not running:
        raise DaemonUnreachable(
            f"queen is not running at {url}; start it with `keeper queen start`"
        )


def _health(url: str) -> dict[str, object] | None:
    """The queen's /health answer, or None when nothing (or no queen) answers there."""
    import httpx

    try:
        response = httpx.get(f"{url}/health", timeout=2.0, trust_env=False)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def logs(settings: KeeperSettings, *, follow: bool, lines: int) -> None:
    """Print the last `lines` lines of the queen's log, sanitised; -f keeps following."""
    from narration_core import NarrationEvent, parse_line, strip_control

    path = RbeePaths.resolve().logs / f"{NAME}.log"
    if not path.exists():
        raise UsageError(f"no queen log at {path} yet; start the queen with `keeper queen start`")
    data = path.read_bytes()
    tail = data.splitlines()[-lines:] if lines > 0 else []
    out = sys.stdout

    def show(line: str) -> None:
        if settings.json:  # same shape as every other --json output: one event per line
            event = parse_line(line)
            if event is None:
                event = NarrationEvent(PROGRAM, "output", line, stream="stdout")
            record = {"event": "output" if event.stream else "narration", **event.to_dict()}
            out.write(json.dumps(record) + "\n")
        else:
            out.write(strip_control(line) + "\n")

    for raw in tail:
        show(raw.decode("utf-8", "replace"))
    out.flush()
    if not follow:
        return
    offset = len(data)
    splitter = LineSplitter()
    while True:  # until Ctrl-C (exit 130)
        try:
            with path.open("rb") as f:
                if os.fstat(f.fileno()).st_size < offset:  # a new start rotated the log
                    offset = 0
                f.seek(offset)
                chunk = f.read(TAIL_CHUNK)
        except FileNotFoundError:  # between the rotation and the new queen's first line
            chunk = b""
        if chunk:
            offset += len(chunk)
            for line in splitter.feed(chunk):
                show(line)
            out.flush()
        else:
            time.sleep(POLL_S * 4)


def overview(settings: KeeperSettings, *, watch: bool = False, interval: float = 2.0) -> None:
    """`keeper status`: submits a queen_status job and renders what the queen says."""
    from keeper.commands.jobs import stream_operation

    if interval <= 0:
        raise UsageError(f"--interval {interval:g} must be a positive number of seconds")
    operation: dict[str, object] = {"operation": "queen_status"}
    if watch:
        operation |= {"watch": True, "interval_s": interval}
    stream_operation(settings, operation)
