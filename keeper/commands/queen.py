"""`keeper queen start|stop|status|logs` and `keeper status --watch`: the arguments and
the queen's own rules (one queen per RBEE_HOME, its port, foreign queens); starting,
tailing, health-waiting and stopping are `keeper.launch`'s.

Start (detached): the queen runs in its own session with stdout and stderr appended to
`logs/queen.log`, its startup narration relayed live until `/health` answers.
`--foreground` captures the queen's pipes instead and stops it on Ctrl-C.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from jobs import LOOPBACK, RbeePaths
from keeper import daemons
from keeper.errors import DaemonUnreachable, JobFailed, UsageError
from keeper.output import make_renderer
from keeper.settings import KeeperSettings
from narration_core import Narrator, strip_control

if TYPE_CHECKING:  # launch loads anyio: `stop` and `status` start without it
    pass

NAME = daemons.QUEEN
PROGRAM = "queen-rbee"
HEALTH_TIMEOUT_S = 2.0  # connecting to the queen and its /health answer, each

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
    """`keeper queen start`: this RBEE_HOME's queen, unless it runs (then say where)."""
    from keeper import launch

    launch.start_queen(
        settings, port=port, bind=bind, token=token, foreground=foreground, timeout=timeout
    )


# -- stop / status / logs ------------------------------------------------------------


def stop(settings: KeeperSettings) -> None:
    """Stop this RBEE_HOME's queen; say whose it is when another home's queen answers."""
    from keeper.lost_pidfile import adopt
    from keeper.stopping import stop_local

    paths = RbeePaths.resolve()

    def not_ours() -> None:
        _refuse_foreign_queen(settings.queen_url, paths, doing="stop")

    with make_renderer(settings):
        adopt(paths.run, NAME, paths.state, log=paths.logs / f"{NAME}.log", label="queen")
        stop_local(paths.run, NAME, label="queen", if_not_running=not_ours)


def _refuse_foreign_queen(url: str, paths: RbeePaths, *, doing: str) -> None:
    """Raise DaemonUnreachable when a queen this RBEE_HOME did not start answers at `url`."""
    health = _health(url)
    if health.status is None:
        return  # nothing answers there: not running is the whole story
    port = urlsplit(url).port
    owner = daemons.port_owner(port) if port is not None else None
    if owner is not None and owner.state == paths.state:
        return  # ours after all (pidfile lost); nothing better to say than "not running"
    whose = (
        owner.describe(paths.state)
        if owner is not None
        else "a server this RBEE_HOME did not start"
    )
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
            "event": "queen",
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
    if not _accepts_connections(url):
        return _Health()
    import httpx  # only once something listens: a stopped queen's port refuses at once

    from jobs.client import tls_for

    try:
        response = httpx.get(
            f"{url}/health", timeout=HEALTH_TIMEOUT_S, trust_env=False, verify=tls_for(url)
        )
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return _Health()
    if not isinstance(body, dict) or response.status_code not in (200, 503):
        return _Health()
    return _Health(response.status_code, body)


def _accepts_connections(url: str) -> bool:
    """Whether anything accepts a TCP connection at `url`'s host and port."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or LOOPBACK, port), HEALTH_TIMEOUT_S):
            return True
    except OSError:  # refused, unreachable, unresolvable, timed out: httpx would fail too
        return False


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def logs(settings: KeeperSettings, *, follow: bool, lines: int) -> None:
    """Print the last `lines` lines of the queen's log, sanitised; -f keeps following."""
    from keeper import daemon_log

    path = RbeePaths.resolve().logs / f"{NAME}.log"
    if not path.exists():
        raise UsageError(f"no queen log at {path} yet; start the queen with `keeper queen start`")
    daemon_log.print_log(path, program=PROGRAM, as_json=settings.json, follow=follow, lines=lines)


def overview(settings: KeeperSettings, *, watch: bool = False, interval: float = 2.0) -> None:
    """`keeper status --watch`: follows a queen_status watch job (a user asked for a running
    view; the queen ends it once nobody reads it). A plain `keeper status` is a GET."""
    from jobs import queen_status_op
    from keeper.session import stream_operation

    if interval <= 0:
        raise UsageError(f"--interval {interval:g} must be a positive number of seconds")
    stream_operation(settings, queen_status_op(watch=watch, interval_s=interval))
