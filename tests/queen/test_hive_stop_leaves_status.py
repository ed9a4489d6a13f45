"""A stopped hive leaves `keeper status` at once: real keeper, queen, hive and worker.

The queen requires a token (RBEE_TOKEN), so the hive's goodbye is authenticated like its
beats; the hive beats at the default interval, so staleness (three missed beats, 6 s)
could not explain a hive gone within GONE_DEADLINE_S, and a stale hive stays listed
anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs import BEAT_INTERVAL_S, STALE_AFTER_BEATS
from jobs.client import SyncJobClient

TOKEN = "goodbye-test-token"
GONE_DEADLINE_S = 2.0  # after `hive stop` returns; the queen calls a hive stale after 6 s
KNOWN_DEADLINE_S = 20.0  # the hive's first beat on a busy machine
KEEPER_TIMEOUT_S = 120.0  # a worker spawn loads llama.cpp on a busy 2-core machine

Keeper = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def keeper_with_token(rbee_home: Path) -> Keeper:
    """The real keeper (`python -m keeper`) with RBEE_TOKEN set: the queen it starts
    requires the token, and the hive it starts beats (and says goodbye) with it."""
    env = {**os.environ, "RBEE_HOME": str(rbee_home), "RBEE_TOKEN": TOKEN, "NO_COLOR": "1"}
    env.pop("RBEE_QUEEN_URL", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keeper", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=KEEPER_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )

    return run


@pytest.fixture
def daemons(keeper_with_token: Keeper, free_tcp_port_factory: Callable[[], int]) -> Iterator[str]:
    """A queen and a local hive started by the keeper; yields the queen's URL; both are
    stopped after the test."""
    queen_port, hive_port = free_tcp_port_factory(), free_tcp_port_factory()
    try:
        queen = keeper_with_token("queen", "start", "--port", str(queen_port))
        assert queen.returncode == 0, queen.stderr
        hive = keeper_with_token("hive", "start", "--port", str(hive_port))
        assert hive.returncode == 0, hive.stderr
        yield f"http://127.0.0.1:{queen_port}"
    finally:
        keeper_with_token("hive", "stop")
        keeper_with_token("queen", "stop")


def snapshot(queen_url: str) -> dict[str, Any]:
    """The queen's status (a queen_status job's result), asked with the token."""
    with SyncJobClient(queen_url, token=TOKEN) as client:
        for event in client.stream(client.submit({"operation": "queen_status"})):
            if event.is_final:
                return dict(event.data["result"])
    raise AssertionError("no final state")


def wait_for(queen_url: str, check: Callable[[dict[str, Any]], bool], deadline_s: float) -> float:
    """Poll the queen's status until `check` holds; returns the seconds it took."""
    began = time.monotonic()
    while True:
        status = snapshot(queen_url)
        if check(status):
            return time.monotonic() - began
        assert time.monotonic() - began < deadline_s, status
        time.sleep(0.05)


def beating(status: dict[str, Any]) -> bool:
    return any(h["hive_id"] == "localhost" and h["last_seen"] for h in status["hives"])


def test_a_stopped_hive_and_its_worker_leave_status_at_once(
    keeper_with_token: Keeper, daemons: str
) -> None:
    """1. queen (with a token) and hive started by the keeper; the hive beats.
    2. a builtin:tiny worker is spawned: `keeper status` lists it.
    3. `keeper hive stop`.
    Result: the queen lists neither the hive nor its worker within GONE_DEADLINE_S (well
    under the stale timeout), `keeper --json status` agrees, and the hive's log shows it
    said goodbye."""
    assert GONE_DEADLINE_S < STALE_AFTER_BEATS * BEAT_INTERVAL_S
    wait_for(daemons, beating, KNOWN_DEADLINE_S)
    spawned = keeper_with_token("worker", "spawn", "--model", "builtin:tiny")
    assert spawned.returncode == 0, spawned.stderr
    before = snapshot(daemons)
    assert [w["hive_id"] for w in before["workers"]] == ["localhost"]

    stopped = keeper_with_token("hive", "stop")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(
        daemons,
        lambda s: not s["workers"] and "localhost" not in [h["hive_id"] for h in s["hives"]],
        GONE_DEADLINE_S,
    )

    shown = keeper_with_token("--json", "status")
    assert shown.returncode == 0, shown.stderr
    final = json.loads(shown.stdout.splitlines()[-1])
    assert final["state"] == "completed"
    assert final["result"]["workers"] == []
    assert all(h["hive_id"] != "localhost" for h in final["result"]["hives"])
    logs = keeper_with_token("hive", "logs")
    assert "Told the queen" in logs.stdout, logs.stdout[-2000:]
