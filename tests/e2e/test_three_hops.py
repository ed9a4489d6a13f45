"""The whole chain with real processes: keeper -> queen-rbee -> rbee-hive -> llm-worker-rbee.

Every daemon is started by the real keeper CLI on free ports under the test's RBEE_HOME,
and stopped by it at the end (SIGKILL leftovers are reaped by the pidfiles' stop).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Chain

pytestmark = pytest.mark.slow

BEAT_S = 0.2  # the hive's heartbeat interval here: stale after three missed, 0.6 s
DEADLINE_S = 30.0  # a cold start of three Python servers on a busy 2-core machine


@pytest.fixture
def chain(
    keeper: Any, rbee_home: Path, free_tcp_port_factory: Callable[[], int]
) -> Iterator[Chain]:
    made = Chain(
        rbee_home,
        queen_port=free_tcp_port_factory(),
        hive_port=free_tcp_port_factory(),
        beat_s=BEAT_S,
        names_queen=False,  # the keeper finds the queen it started, as a user's does
        deadline_s=120.0,
    )
    try:
        yield made
    finally:
        made.stop()
        _kill_leftovers(rbee_home / "run")


def _kill_leftovers(run_dir: Path) -> None:
    """SIGKILL any daemon a failed `stop` left behind (its pidfile names it), so one
    test's trouble never leaves a queen or hive running on the machine."""
    import psutil

    for pidfile in run_dir.glob("*.pid"):
        try:
            record = json.loads(pidfile.read_text())
            process = psutil.Process(int(record["pid"]))
            if abs(process.create_time() - float(record["create_time"])) < 1.0:
                process.kill()
        except (OSError, ValueError, KeyError, psutil.Error):
            continue  # gone already, or not ours


async def wait_for(predicate: Callable[[list[dict[str, Any]]], bool], chain: Chain) -> None:
    """Ask the queen for its hives until `predicate` holds, under DEADLINE_S."""
    import anyio

    with anyio.fail_after(DEADLINE_S):
        while not predicate(await chain.hives()):  # noqa: ASYNC110 - the queen has no push
            await anyio.sleep(BEAT_S)


def json_events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_worker_narration_reaches_the_keeper_through_three_hops(chain: Chain) -> None:
    """`keeper worker spawn` shows the worker's own startup and model_load lines, with the
    worker's actor and origin hive:localhost/worker:<id>, under the queen job's id."""
    chain.start_queen()
    chain.start_hive()
    chain.run("model", "download", "builtin:tiny")
    result = chain.run("--json", "worker", "spawn", "--model", "builtin:tiny")
    events = json_events(result.stdout)
    submitted = next(e for e in events if e.get("action") == "submitted")
    job_id = submitted["target"]
    worker = [e for e in events if e.get("actor") == "llm-worker-rbee"]
    actions = {e["action"] for e in worker}
    assert {"startup", "model_load"} <= actions, result.stdout
    for event in worker:
        assert event["job_id"] == job_id
        assert event["origin"].startswith("hive:localhost/worker:")
    assert events[-1] == {**events[-1], "event": "state", "state": "completed"}


def test_hive_stop_lets_the_hive_stop_its_workers_gracefully(chain: Chain) -> None:
    """`keeper hive stop` signals the hive, which stops its worker: the worker hears one
    SIGTERM and stops cleanly, not a second one from the keeper that cuts its stop short."""
    chain.start_queen()
    chain.start_hive()
    chain.run("model", "download", "builtin:tiny")
    spawned = json_events(chain.run("--json", "worker", "spawn", "--model", "builtin:tiny").stdout)
    worker_id = spawned[-1]["result"]["worker_id"]
    chain.run("hive", "stop")
    log = (chain.home / "logs" / "workers" / f"{worker_id}.log").read_text()
    assert "SIGTERM: cancelling running jobs and stopping" in log
    assert "again: exiting now" not in log


def test_status_shows_a_spawned_worker_before_the_next_beat(chain: Chain) -> None:
    """`keeper status` right after `keeper worker spawn` lists the new worker, ready, though
    its hive (beating once a minute here) has not beaten since: the queen knows what it
    just did. Stopping it through the queen takes it off the list as promptly."""
    chain.start_queen()
    chain.run("hive", "start", "--port", str(chain.hive_port), "--beat-interval", "60")
    chain.run("model", "download", "builtin:tiny")
    spawned = json_events(chain.run("--json", "worker", "spawn", "--model", "builtin:tiny").stdout)
    worker_id = spawned[-1]["result"]["worker_id"]
    status = json_events(chain.run("--json", "status").stdout)[-1]["result"]
    assert [(w["worker_id"], w["state"]) for w in status["workers"]] == [(worker_id, "ready")]
    (hive,) = status["hives"]
    assert [w["worker_id"] for w in hive["workers"]] == [worker_id]
    chain.run("worker", "stop", worker_id)
    assert json_events(chain.run("--json", "status").stdout)[-1]["result"]["workers"] == []


def test_a_restarted_queen_knows_where_the_running_local_hive_listens(chain: Chain) -> None:
    """A queen started again beside a local hive that kept running (on a port of its own,
    beating once a minute) names that hive's real URL at once, from its pidfile, rather
    than the default port until the hive's next beat."""
    chain.start_queen()
    chain.run("hive", "start", "--port", str(chain.hive_port), "--beat-interval", "60")
    chain.run("queen", "stop")
    chain.start_queen()
    listed = json_events(chain.run("--json", "hive", "list").stdout)[-1]["result"]["hives"]
    assert [(h["hive_id"], h["url"]) for h in listed] == [
        ("localhost", f"http://127.0.0.1:{chain.hive_port}")
    ]


@pytest.mark.anyio
async def test_queen_relearns_a_hive_and_marks_a_killed_one_stale(chain: Chain) -> None:
    """A restarted queen knows the running hive again from its beats; a hive killed with
    SIGKILL is then marked stale (not forgotten)."""
    chain.start_queen()
    chain.start_hive()
    hive_url = f"http://127.0.0.1:{chain.hive_port}"

    def fresh(hives: list[dict[str, Any]]) -> bool:
        return any(h["url"] == hive_url and h["last_seen"] and not h["stale"] for h in hives)

    await wait_for(fresh, chain)
    chain.run("queen", "stop")
    chain.start_queen()  # same port, empty registry: only beats can tell it about the hive
    await wait_for(fresh, chain)
    started = time.monotonic()
    os.kill(chain.hive_pid(), signal.SIGKILL)
    await wait_for(lambda hives: any(h["url"] == hive_url and h["stale"] for h in hives), chain)
    assert time.monotonic() - started < 10 * BEAT_S + 5  # three missed beats, plus a status job
    (hive,) = [h for h in await chain.hives() if h["hive_id"] == "localhost"]
    assert hive["url"] == hive_url and hive["version"]  # kept while stale
