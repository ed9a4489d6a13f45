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
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from jobs.paths import LOOPBACK, QUEEN_PORT, TOKEN_ENV, RbeePaths
from keeper import daemons
from keeper.errors import DaemonUnreachable, JobFailed, UsageError, how_it_ended
from keeper.render import make_renderer
from keeper.settings import KeeperSettings
from narration_core import LineSplitter, Narrator, relay_lines, strip_control

NAME = daemons.QUEEN
PROGRAM = "queen-rbee"
POLL_S = 0.05  # seconds between looks at the log file and the child while starting
HEALTH_EVERY_S = 0.2  # seconds between /health probes while starting
TAIL_CHUNK = 256 * 1024  # bytes read from the log per look

NARRATE = Narrator("keeper")


def start(
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
    url = f"http://{_client_host(bind)}:{port}"
    argv = [sys.executable, "-m", "queen", "--port", str(port), "--bind", bind]
    env = dict(os.environ)
    if token:
        env[TOKEN_ENV] = token  # in the environment, not argv: argv is visible in `ps`

    def waiting() -> None:
        NARRATE.action("wait_lock").human(
            "Another keeper is starting the queen of this RBEE_HOME; waiting for it"
        ).emit()

    with make_renderer(settings) as out:
        out.status(f"Starting {PROGRAM} on {bind}:{port}")
        # The whole sequence (look, rotate the log, spawn, pidfile, health) under one lock:
        # a racing keeper waits here, then finds this queen running.
        with daemons.start_lock(paths.run, NAME, on_wait=waiting) as release:
            if _already_running(paths, url, bind, port, asked_port=asked_port):
                return
            if foreground:
                anyio.run(_run_foreground, paths, argv, env, url, timeout, release, out.status)
            else:
                anyio.run(_start_detached, paths, argv, env, url, timeout)


def _already_running(
    paths: RbeePaths, url: str, bind: str, port: int, *, asked_port: int | None
) -> bool:
    """Say so and return True when this RBEE_HOME's queen already serves.

    Cleans a stale pidfile. Raises JobFailed when our queen runs on another port than
    the one asked for, DaemonUnreachable when the port is taken by anything else.
    """
    pidfile = daemons.PidFile(paths.run, NAME)
    record = pidfile.read()
    if record is not None:
        if daemons.live_process(record) is not None:
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
    if daemons.port_in_use(bind, port):
        owner = daemons.port_owner(port)
        if owner is not None and owner.state == paths.state:  # our queen, pidfile lost
            pidfile.write(_record(owner.pid, url, paths.logs / f"{NAME}.log", []))
            NARRATE.action("already_running").target(url).human(
                f"Queen is already running (pid {owner.pid}) at {url}; its pidfile was missing "
                "and is written again"
            ).emit()
            return True
        if owner is not None:
            raise DaemonUnreachable(
                f"port {port} on {bind} is taken by {owner.describe()}; "
                f"pass another --port, or stop that queen with {owner.stop_hint()}"
            )
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
    paths: RbeePaths,
    argv: list[str],
    env: dict[str, str],
    url: str,
    startup_s: float,
    release_lock: Callable[[], None],
    status: Callable[[str | None], None],
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
            release_lock()  # healthy and in the pidfile: another start now finds it
            status(f"{PROGRAM} running at {url}; Ctrl-C stops it")
            NARRATE.action("ready").target(url).human(
                f"Queen is ready at {url} (pid {proc.pid}); Ctrl-C stops it"
            ).emit()
            await anyio.sleep_forever()
        if exit_code and exit_code[0] != 0:
            raise JobFailed(f"{PROGRAM} {how_it_ended(exit_code[0])}", exit_code=1)
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
    """Stop this RBEE_HOME's queen; say whose it is when another home's queen answers."""
    paths = RbeePaths.resolve()
    pidfile = daemons.PidFile(paths.run, NAME)
    with make_renderer(settings):
        record = pidfile.read()
        proc = daemons.live_process(record) if record is not None else None
        if proc is None or record is None:
            if record is not None:
                pidfile.remove()
            _refuse_foreign_queen(settings.queen_url, paths, doing="stop")
            NARRATE.action("not_running").human(
                "Queen is not running (no pidfile)"
                if record is None
                else f"Queen was not running; removed the stale pidfile for pid {record.pid}"
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


def _refuse_foreign_queen(url: str, paths: RbeePaths, *, doing: str) -> None:
    """Raise DaemonUnreachable when a queen this RBEE_HOME did not start answers at `url`."""
    health = _health(url)
    if health.status is None:
        return  # nothing answers there: not running is the whole story
    port = urlsplit(url).port
    owner = daemons.port_owner(port) if port is not None else None
    if owner is not None and owner.state == paths.state:
        return  # ours after all (pidfile lost); nothing better to say than "not running"
    whose = owner.describe() if owner is not None else "a server this RBEE_HOME did not start"
    hint = owner.stop_hint() if owner is not None else "the RBEE_HOME it was started with"
    raise DaemonUnreachable(
        f"cannot {doing} the queen at {url}: it is {whose}; manage it with {hint}, "
        f"or start this RBEE_HOME's queen on another port with `keeper queen start --port N`"
    )


def status(settings: KeeperSettings) -> None:
    """Print the queen's state and exit 0 only when it runs and answers /health.

    Raises DaemonUnreachable (exit 3) when no queen runs, JobFailed (exit 1) when ours
    runs but /health fails (503: it cannot run jobs, with the queen's reason) or does
    not answer, and DaemonUnreachable when the queen at the URL is another RBEE_HOME's.
    """
    paths = RbeePaths.resolve()
    record = daemons.PidFile(paths.run, NAME).read()
    proc = daemons.live_process(record) if record is not None else None
    ours = record if proc is not None else None  # the pidfile names a live queen
    url = ours.url if ours is not None else settings.queen_url
    health = _health(url)
    if ours is None and health.status is not None:
        _refuse_foreign_queen(url, paths, doing="report on")
    running = ours is not None or health.status is not None
    uptime_s = round(time.time() - ours.create_time, 1) if ours is not None else None
    version = health.body.get("version")
    problem = None
    if running and not health.ok:
        problem = (
            f"it answers /health with HTTP {health.status}: {health.reason}"
            if health.status is not None
            else "it does not answer /health"
        )
    if settings.json:
        info = {
            "running": running,
            "pid": ours.pid if ours is not None else None,
            "url": url,
            "uptime_s": uptime_s,
            "version": version,
            "healthy": health.ok,
            "problem": problem,
            "log": record.log if record is not None else str(paths.logs / f"{NAME}.log"),
        }
        sys.stdout.write(json.dumps(info) + "\n")
    else:
        with make_renderer(settings):
            if running:
                uptime = _duration(uptime_s) if uptime_s is not None else "?"
                pid = ours.pid if ours is not None else "?"
                NARRATE.action("status").target(url).level(
                    "info" if problem is None else "error"
                ).human(
                    f"Queen is running: pid {pid}, {url}, up {uptime}, version {version}"
                    + ("" if problem is None else f"; but {problem}")
                ).emit()
            else:
                NARRATE.action("status").target(url).human(
                    "Queen is not running; start it with `keeper queen start`"
                ).emit()
    if not running:
        raise DaemonUnreachable(
            f"queen is not running at {url}; start it with `keeper queen start`"
        )
    if problem is not None:
        raise JobFailed(f"the queen at {url} runs but {problem}; `keeper queen logs` shows why")


@dataclass(frozen=True, slots=True)
class _Health:
    """What GET /health said: `status` None when nothing answered."""

    status: int | None = None
    body: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def reason(self) -> str:
        for key in ("error", "reason", "detail", "status"):
            if isinstance(value := self.body.get(key), str) and value:
                return strip_control(value)
        return "no reason given"


def _health(url: str) -> _Health:
    """The queen's /health answer; an answer that is not rbee's JSON counts as none."""
    import httpx

    try:
        response = httpx.get(f"{url}/health", timeout=2.0, trust_env=False)
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return _Health()
    if not isinstance(body, dict) or response.status_code not in (200, 503):
        return _Health()
    return _Health(response.status_code, body)


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
