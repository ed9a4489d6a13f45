"""A newcomer's first command just works: start a local queen and hive when none runs.

    ensure_local_chain(settings)   # before `keeper infer` / `keeper worker spawn`

When the keeper's queen URL is on this machine and nothing answers there, the queen is
started on that port (as `keeper queen start --port` would), then the local hive of this
RBEE_HOME unless it runs: on the queen's port + 2 (7835 beside the default 7833), or a
free port when that one is taken. Both are narrated and left running (`keeper hive stop`,
`keeper queen stop` end them). The keeper then waits until the queen has heard the
hive's first heartbeat, so the job that follows finds a hive to run on.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from jobs import LOOPBACK, RbeePaths
from jobs.client import tls_for
from keeper import daemons
from keeper.errors import DaemonUnreachable
from keeper.settings import KeeperSettings
from narration_core import Narrator

NARRATE = Narrator("keeper")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
HEALTH_TIMEOUT_S = 2.0  # a queen that does not answer /health within this is not there
HIVE_PORT_OFFSET = 2  # the hive beside the queen: 7833 -> 7835
# Until the queen has a beat from the hive: a hive that outlived its queen retries on a
# backoff of up to 30 s (jobs.BEAT_BACKOFF_MAX_S), so its next beat may be that far.
HIVE_KNOWN_DEADLINE_S = 40.0
HIVE_KNOWN_POLL_S = 0.05  # a cold `keeper infer` waits on this: found within 50 ms
LOCAL_HIVE = "localhost"
HIVE_START_S = 30.0  # a cold interpreter importing the server stack on a busy machine


def ensure_local_chain(settings: KeeperSettings) -> None:
    """Start the local queen and hive if they are not running (see the module docstring)."""
    url = urlsplit(settings.queen_url)
    if url.hostname not in LOCAL_HOSTS:
        return  # a remote queen is not ours to start: an unreachable one is reported later
    started = False
    if not _healthy(settings.queen_url):
        from keeper import launch

        NARRATE.action("autostart").human(
            f"No queen answers at {settings.queen_url}; starting one (left running: "
            "`keeper queen stop` ends it)"
        ).emit()
        port = url.port or (443 if url.scheme == "https" else 80)
        launch.start_queen(
            settings, port=port, bind=LOOPBACK, token=None, foreground=False, timeout=30
        )
        started = True
    if not _local_hive_runs():
        from keeper import launch

        port = _hive_port(url.port)
        NARRATE.action("autostart").human(
            f"No local hive runs; starting hive {LOCAL_HIVE} on port {port} (left running: "
            "`keeper hive stop` ends it)"
        ).emit()
        launch.start_local_hive(
            settings,
            LOCAL_HIVE,
            port=port,
            foreground=False,
            timeout=HIVE_START_S,
            any_port_if_running=True,
        )
        started = True
    if started:
        anyio.run(_wait_hive_known, settings)


def _healthy(url: str) -> bool:
    try:
        reply = httpx.get(
            f"{url}/health", timeout=HEALTH_TIMEOUT_S, trust_env=False, verify=tls_for(url)
        )
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


def _local_hive_runs() -> bool:
    record = daemons.PidFile(RbeePaths.resolve().run, f"hive-{LOCAL_HIVE}").read()
    return record is not None and daemons.live_process(record) is not None


def _hive_port(queen_port: int | None) -> int:
    """The queen's port + 2 when free, else any free loopback port."""
    if queen_port is not None:
        wanted = queen_port + HIVE_PORT_OFFSET
        if wanted < 65536 and not daemons.port_in_use(LOOPBACK, wanted):
            return wanted
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_hive_known(settings: KeeperSettings) -> None:
    """Until the queen has heard a hive beat; raises DaemonUnreachable after the deadline.

    A hive from the queen's config that never beat does not count: its URL is a guess (the
    default port), and the local hive may run elsewhere (beside a queen on another port).
    """
    from jobs.client import JobClient

    async with JobClient(settings.queen_url, token=settings.token()) as client:
        with anyio.move_on_after(HIVE_KNOWN_DEADLINE_S):
            while True:
                status: dict[str, Any] = await client.status()  # a GET: no job per look
                hives = status.get("hives", [])
                if any(h.get("last_seen") and not h.get("stale") for h in hives):
                    return
                await anyio.sleep(HIVE_KNOWN_POLL_S)
    raise DaemonUnreachable(
        f"the queen at {settings.queen_url} has not heard from the local hive within "
        f"{HIVE_KNOWN_DEADLINE_S:g} s; see `keeper hive logs`"
    )
