"""`keeper hive …`, `keeper worker …` and `keeper model …` as a user runs them."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support import queen_settings, start_queen

STATUS_DEADLINE_S = 10.0  # a few heartbeats on a busy machine


@pytest.mark.parametrize(
    "args",
    [("hive", "start", "gpu1"), ("hive", "stop", "gpu1"), ("hive", "logs", "gpu1")],
    ids=["start", "stop", "logs"],
)
def test_unknown_hive_alias_shows_a_sample_config_entry(keeper: Any, args: tuple[str, ...]) -> None:
    """An alias in neither the hives config nor the SSH config is a usage error showing
    the hives config entry to add."""
    result = keeper(*args)
    assert result.returncode == 2
    assert "is not in" in result.stderr and "[hives.gpu1]" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.anyio
async def test_an_unreachable_hive_is_named_not_the_queen(
    keeper: Any, rbee_home: Path, free_tcp_port: int
) -> None:
    """A queen that answers but cannot reach its hive: exit 3 naming the hive and its URL,
    for `model list` and for `hive status` alike (a stopped remote hive's status exits 3 too)."""
    hive_url = f"http://127.0.0.1:{free_tcp_port}"
    settings = dataclasses.replace(queen_settings(rbee_home), hives={"localhost": hive_url})
    async with start_queen(settings) as queen:
        results = [
            await anyio.to_thread.run_sync(keeper, "--queen-url", queen.url, *args)
            for args in (("model", "list"), ("hive", "status", "localhost"))
        ]
    for result in results:
        assert result.returncode == 3, result.stderr
        assert f"hive localhost unreachable at {hive_url}" in result.stderr
        assert "queen is not reachable" not in result.stderr


def test_hive_list_and_status_run_as_queen_jobs(keeper: Any, free_tcp_port: int) -> None:
    """`keeper hive list` and `keeper hive status ALIAS` submit hive_list / hive_status to
    the queen and render its answer; an alias configured nowhere here is still asked of the
    queen (it may know the hive from its heartbeats): unknown there too, the queen's
    one-sentence error, exit 1."""
    assert keeper("queen", "start", "--port", str(free_tcp_port)).returncode == 0
    try:
        listed = keeper("--json", "hive", "list")
        assert listed.returncode == 0, listed.stderr
        events = [json.loads(line) for line in listed.stdout.splitlines()]
        assert any(e.get("action") == "job_start" and e["target"] == "hive_list" for e in events)
        assert events[-1]["event"] == "state" and events[-1]["state"] == "completed"
        assert "hives" in events[-1]["result"]

        unknown = keeper("hive", "status", "nosuchhive")
        assert unknown.returncode == 1
        assert re.search(r"no hive 'nosuchhive' is known to the queen", unknown.stderr)
        assert "hive_status" in unknown.stdout
    finally:
        assert keeper("queen", "stop").returncode == 0


@pytest.fixture
def daemons(keeper: Any, free_tcp_port_factory: Callable[[], int]) -> Iterator[tuple[int, int]]:
    """Ports for a queen and a hive the test starts with the keeper; both stopped after."""
    ports = free_tcp_port_factory(), free_tcp_port_factory()
    try:
        yield ports
    finally:
        keeper("hive", "stop")
        keeper("queen", "stop")


def test_hive_start_logs_and_stop(keeper: Any, daemons: tuple[int, int]) -> None:
    """`hive start` streams the hive's startup until healthy and leaves it running; a second
    start finds it (and refuses to say so for another --port: it runs elsewhere); `hive
    logs` prints its log; `hive stop` stops it."""
    queen_port, hive_port = daemons
    assert keeper("queen", "start", "--port", str(queen_port)).returncode == 0
    started = keeper("--json", "hive", "start", "--port", str(hive_port))
    assert started.returncode == 0, started.stderr
    events = [json.loads(line) for line in started.stdout.splitlines()]
    hive_lines = [(e["actor"], e["action"]) for e in events if e.get("actor") == "rbee-hive"]
    assert ("rbee-hive", "ready") in hive_lines
    assert events[-1]["action"] == "ready" and events[-1]["actor"] == "keeper"
    deadline = time.monotonic() + STATUS_DEADLINE_S
    while True:  # the queen knows the hive's port once its first heartbeat has landed
        status = keeper("status")
        assert status.returncode == 0, status.stderr
        rows = [line for line in status.stdout.splitlines() if f":{hive_port}" in line]
        if rows or time.monotonic() > deadline:
            break
    assert rows[0].split()[0] == "localhost" and " up " in rows[0]
    again = keeper("hive", "start", "--port", str(hive_port))
    assert again.returncode == 0 and "already running" in again.stdout
    elsewhere = keeper("hive", "start", "--port", str(queen_port + 7))
    assert elsewhere.returncode == 1  # running on another port than asked: say where
    assert f"already runs at http://127.0.0.1:{hive_port}" in elsewhere.stderr
    assert f"not on port {queen_port + 7}" in elsewhere.stderr
    logs = keeper("hive", "logs")
    assert logs.returncode == 0 and "] ready" in logs.stdout
    stopped = keeper("hive", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert "not running" in keeper("hive", "stop").stdout


def test_download_progress_is_one_bar_on_a_terminal_and_lines_elsewhere() -> None:
    """Progress events draw the bar in place on the live view; plain output keeps the lines."""
    import io

    from rich.console import Console

    from keeper.commands.model import progress_line, show_progress
    from keeper.output import Renderer
    from keeper.settings import KeeperSettings

    event = {
        "actor": "rbee-hive",
        "action": "download_progress",
        "human": "41%",
        "target": "tiny",
        "fields": {"bytes": 1_200_000, "total": 2_900_000, "rate_bps": 3.4e6},
    }
    assert progress_line("tiny", event["fields"]).split()[2:4] == ["41%", "1.2"]
    live = Renderer(KeeperSettings(), console=Console(file=io.StringIO(), force_terminal=True))
    plain = Renderer(KeeperSettings(), file=io.StringIO(), mode="plain")
    assert show_progress(live, "narration", event) is True
    assert show_progress(plain, "narration", event) is False
    assert show_progress(live, "narration", {**event, "action": "download_done"}) is False


def test_hive_foreground_runs_until_ctrl_c(keeper: Any, daemons: tuple[int, int]) -> None:
    """`hive start --foreground` relays the hive live and, on Ctrl-C, stops it (exit 130,
    pidfile gone)."""
    import signal
    import subprocess
    import sys

    from narration_core import parse_line

    queen_port, hive_port = daemons
    assert keeper("queen", "start", "--port", str(queen_port)).returncode == 0
    argv = [sys.executable, "-m", "keeper", "hive", "start", "--port", str(hive_port)]
    with subprocess.Popen(
        [*argv, "--foreground"],
        env=keeper.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as fg:
        assert fg.stdout is not None
        seen = []
        for line in fg.stdout:  # ends at EOF if keeper dies: the assert below then fails
            seen.append(line)
            event = parse_line(line)
            if event is not None and event.actor == "keeper" and event.action == "ready":
                break
        assert any("[rbee-hive ] listen" in line for line in seen), seen
        pidfile = keeper.home / "run" / "hive-localhost.pid"
        assert pidfile.exists()
        fg.send_signal(signal.SIGINT)
        assert fg.wait(timeout=30) == 130
    assert not pidfile.exists()
    assert "not running" in keeper("hive", "stop").stdout
