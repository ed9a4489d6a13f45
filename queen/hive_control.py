"""`hive_start` and `hive_stop`: the queen starts and stops the hives of its configuration
(localhost and the hives config's aliases), through the lifecycle library the keeper uses
(`daemons`), so the dashboard's Start hive and Stop hive buttons do what `keeper hive
start` and `keeper hive stop` do, with the same narration streamed into the job: the
start, the hive's own startup lines (its log tailed while it starts), ready, then live
once its first heartbeat lands here.

The hive beats to this queen (`queen_url`: the URL the queen serves; a remote hive's
`queen_url` from its hives config entry wins). A local hive takes the port this queen
knows it by (its pidfile or its config), else 7835. A remote alias is started over SSH as
`keeper hive start ALIAS` does it: host keys verified against known_hosts (a button never
accepts a new one), keys only, secrets on stdin, its startup lines tailed back over SSH.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import anyio

import daemons
from jobs import HIVE_PORT, LOOPBACK, QUEEN_PORT, HiveStart, HiveStop, RbeePaths
from jobs.server import Handler, Job
from narration_core import Narrator
from queen.errors import UnknownHive
from queen.hives import HiveRegistry

NARRATE = Narrator("queen-rbee")
START_TIMEOUT_S = 30.0  # a cold interpreter importing the server stack on a busy machine
FIRST_BEAT_WAIT_S = 10.0  # after /health: the hive's first beat (it beats at once)
BEAT_POLL_S = 0.1  # between looks at the registry for that beat


def hive_control_handlers(
    hives: HiveRegistry, *, queen_url: str | None = None
) -> dict[str, Handler]:
    """The `hive_start` and `hive_stop` handlers; `queen_url` is where the hives it starts
    beat to (None: the URL this queen's pidfile records, else the default port).

    A local hive started here is this queen's child: once it has exited (stopped from
    here or by `keeper hive stop`), the next hive_start or hive_stop reaps it, so no
    more zombies linger than there are hives.
    """
    children: set[int] = set()  # local hives this queen spawned and has not reaped

    def reap_children() -> None:
        for pid in list(children):
            if daemons.reap(pid) is not None:
                children.discard(pid)

    def beat_target(paths: RbeePaths) -> str:
        if queen_url is not None:
            return queen_url
        record = daemons.PidFile(paths.run, daemons.QUEEN).read()
        if record is not None and record.pid == os.getpid() and record.url:
            return record.url
        return f"http://{LOOPBACK}:{QUEEN_PORT}"

    def local_port(alias: str, paths: RbeePaths) -> int:
        """The port of the hive's pidfile (it ran here before), else of the URL this
        queen knows it by (the hives config), else 7835."""
        record = daemons.PidFile(paths.run, daemons.hive_daemon_name(alias)).read()
        if record is not None and (port := urlsplit(record.url).port) is not None:
            return port
        try:
            known = hives.get(alias).url
        except UnknownHive:  # configured without a URL: the default port
            return HIVE_PORT
        return urlsplit(known).port or HIVE_PORT

    def waiting(alias: str) -> Callable[[], None]:
        def say() -> None:
            NARRATE.action("wait_lock").human(
                f"Someone else is starting hive {alias} of this RBEE_HOME; waiting for it"
            ).emit()

        return say

    async def start_local(alias: str, paths: RbeePaths) -> daemons.Running:
        daemon = daemons.local_hive(
            paths, alias, port=local_port(alias, paths), queen_url=beat_target(paths)
        )
        async with daemons.hold_start_lock(paths.run, daemon.name, on_wait=waiting(alias)):
            return await daemons.ensure_running(
                daemons.LocalHost(paths.run),
                daemon,
                label=f"hive {alias}",
                timeout_s=START_TIMEOUT_S,
                narrate=NARRATE,
                start_hint=_start_hint(alias),
                bind=LOOPBACK,
                state_dir=paths.state,
            )

    async def start_remote(target: daemons.HiveHost, paths: RbeePaths) -> daemons.Running:
        from daemons.ssh import check_installed, open_host, remote_hive

        alias = target.alias
        name = daemons.hive_daemon_name(alias)
        # Never a new host key from a button: known_hosts decides, as for the keeper.
        async with (
            daemons.hold_start_lock(paths.run, name, on_wait=waiting(alias)),
            open_host(target, accept_new_host_key=False) as host,
        ):
            queen = target.queen_url or beat_target(paths)
            daemon = remote_hive(host, paths, port=target.hive_port, queen_url=queen)
            label = f"hive {alias}"
            record = await daemons.already_running(
                host, daemon, label=label, narrate=NARRATE, start_hint=_start_hint(alias)
            )
            if record is not None:
                return daemons.Running(record, started=False)
            await check_installed(host)
            record = await daemons.start_detached(host, daemon, START_TIMEOUT_S, narrate=NARRATE)
            return daemons.Running(record, started=True)

    async def hive_start(op: HiveStart, job: Job) -> dict[str, Any]:
        alias = op.hive_id
        reap_children()
        paths = RbeePaths.resolve().ensure()
        target = daemons.resolve(alias)
        asked = time.time()
        if target.is_local:
            running = await start_local(alias, paths)
            if running.started:
                children.add(running.record.pid)
        else:
            running = await start_remote(target, paths)
        record = running.record
        if running.started:
            where = "" if target.is_local else f" on {target.ssh_host}"
            NARRATE.action("ready").target(record.url).human(
                f"Hive {alias} is ready at {record.url} (pid {record.pid}{where}); "
                f"`keeper hive logs {alias}` shows its log"
            ).emit()
        await _wait_first_beat(hives, alias, since=asked if running.started else 0.0)
        return {"hive_id": alias, "url": record.url, "pid": record.pid, "started": running.started}

    async def hive_stop(op: HiveStop, job: Job) -> dict[str, Any]:
        alias = op.hive_id
        reap_children()
        paths = RbeePaths.resolve()
        target = daemons.resolve(alias)
        name = daemons.hive_daemon_name(alias)
        label = f"hive {alias}"
        if target.is_local:
            host = daemons.LocalHost(paths.run)
            result = await daemons.stop(host, name, label=label, narrate=NARRATE)
            reap_children()
        else:
            from daemons.ssh import open_host

            async with open_host(target, accept_new_host_key=False) as remote:
                result = await daemons.stop(remote, name, label=label, narrate=NARRATE)
        return {"hive_id": alias, "was_running": result is not None}

    return {"hive_start": hive_start, "hive_stop": hive_stop}


def _start_hint(alias: str) -> str:
    return "keeper hive start" if alias == daemons.LOCAL else f"keeper hive start {alias}"


async def _wait_first_beat(hives: HiveRegistry, alias: str, *, since: float) -> None:
    """Until the hive has beaten here after `since` (narrated as live), or say it has not
    yet: it is running, and the overview shows it as soon as its beat lands."""
    with anyio.move_on_after(FIRST_BEAT_WAIT_S):
        while True:
            found = next((h for h in hives.all() if h.id == alias), None)
            if found is not None and found.last_beat is not None and found.last_beat >= since:
                NARRATE.action("live").target(alias).human(
                    f"Hive {alias} is live: its heartbeat reached the queen"
                ).emit()
                return
            await anyio.sleep(BEAT_POLL_S)
    NARRATE.action("no_beat").level("warn").target(alias).human(
        f"Hive {alias} runs but has not beaten to this queen within {FIRST_BEAT_WAIT_S:g} s; "
        f"see `keeper hive logs {alias}`"
    ).emit()
