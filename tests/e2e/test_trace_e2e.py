"""One trace across every hop, end to end: a real `keeper infer` on a fresh home (the
keeper autostarts the queen and the hive, the hive writes builtin:tiny and spawns a
worker, the worker generates), then `keeper jobs trace` of that request."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from typing import Any

import anyio
import httpx
import pytest

from tests.support import Chain, hive_token

pytestmark = pytest.mark.slow

INFER = ["--model", "builtin:tiny", "--max-tokens", "16", "Tell me a story"]
PHASES_IN_ORDER = [
    "queued",
    "model download",
    "worker spawn",
    "model load",
    "dispatch",
    "slot wait",
    "prompt evaluation",
    "first token",
    "generation",
    "relay",
]


def infer_with_arrival_times(chain: Chain) -> list[tuple[float, dict[str, Any]]]:
    """`keeper --json infer` with autostart; every event with the time this test read it."""
    errors = (chain.home / "keeper-stderr.txt").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "keeper", *chain.flags, "--json", "infer", *INFER],
        env=chain.keeper.env(),
        stdout=subprocess.PIPE,
        stderr=errors,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    seen: list[tuple[float, dict[str, Any]]] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("{"):  # autostart's notices are plain lines, even with --json
                seen.append((time.time(), json.loads(line)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process.wait(timeout=chain.deadline_s)
    finally:
        if process.poll() is None:
            process.kill()
        reader.join(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
        errors.seek(0)
        stderr = errors.read()
        errors.close()
    assert process.returncode == 0, stderr
    return seen


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Any:
    chain = Chain(tmp_path_factory.mktemp("trace-home"))
    try:
        events = infer_with_arrival_times(chain)
        job_id = next(e["job_id"] for _, e in events if e.get("action") == "job_start")
        shown = chain.run("jobs", "trace", job_id)
        data = json.loads(chain.run("--json", "jobs", "trace", job_id).stdout)
        log = httpx.get(f"{chain.queen_url}/v1/jobs/{job_id}/stream", timeout=30).text
        door = door_request(chain.queen_url)
        yield chain, events, job_id, shown.stdout, data, log, door
    finally:
        chain.stop()


USERS_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def door_request(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A chat completion through the OpenAI door from a client that traces its own
    requests (W3C traceparent), and one from a client that does not: their queen jobs."""
    jobs = []
    hello = [{"role": "user", "content": "Hi"}]
    chat = {"model": "builtin:tiny", "max_tokens": 4, "messages": hello}
    for headers in ({"traceparent": f"00-{USERS_TRACE}-00f067aa0ba902b7-01"}, {}):
        reply = httpx.post(f"{url}/v1/chat/completions", json=chat, headers=headers, timeout=120)
        assert reply.status_code == 200, reply.text
        jobs.append(httpx.get(f"{url}/v1/jobs", params={"limit": 1}).json()["jobs"][0])
    return jobs[0], jobs[1]


def test_the_openai_door_joins_a_callers_trace_or_starts_one(traced: Any) -> None:
    *_, door = traced
    joined, started = door
    assert (joined["operation"], joined["trace_id"], joined["parent_job"]) == (
        "infer",
        USERS_TRACE,
        None,
    )
    assert started["trace_id"] not in (USERS_TRACE, None) and len(started["trace_id"]) == 32


def narration_of(log: str) -> list[dict[str, Any]]:
    events = []
    for block in log.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "narration":
            events.append(json.loads(lines["data"]))
    return events


def test_the_waterfall_shows_every_hop_and_phase_in_order(traced: Any) -> None:
    _, _, _, shown, data, _, _ = traced
    phases = [s for s in data["spans"] if s["kind"] in ("phase", "mark")]
    assert [s["name"] for s in phases] == PHASES_IN_ORDER
    offsets = [s["offset_s"] for s in phases]
    assert offsets == sorted(offsets)
    hops = {s["hop"].split(" ")[0] for s in data["spans"]}
    assert hops == {"queen", "hive", "worker"}
    jobs = [s for s in data["spans"] if s["kind"] == "job"]
    assert [s["name"] for s in jobs] == ["infer", "model_download", "worker_spawn", "infer"]
    assert {s["host"] for s in jobs if not s["hop"].startswith("queen")} == {"localhost"}
    # The terminal table names each of them with its hop and host.
    for name in PHASES_IN_ORDER:
        assert name in shown
    assert data["trace_id"] in shown and "hive localhost" in shown


def test_the_phases_add_up_to_the_wall_time(traced: Any) -> None:
    """Phases follow each other without gap or overlap, and together last as long as the
    request did: from the queen taking it to the keeper reading its end."""
    _, events, _, _, data, _, _ = traced
    phases = [s for s in data["spans"] if s["kind"] == "phase"]
    for before, after in itertools.pairwise(phases):
        assert after["offset_s"] == pytest.approx(
            before["offset_s"] + before["duration_s"], abs=2e-6
        )
    ended = next(
        at for at, e in events if e.get("event") == "state" and e.get("state") == "completed"
    )
    wall = ended - data["start"]
    total = sum(s["duration_s"] for s in phases)
    assert total == pytest.approx(wall, rel=0.10), (total, wall)
    assert total > 0.05  # a download, a spawn, a load and a generation take time


def test_all_the_jobs_of_the_request_share_one_trace(traced: Any) -> None:
    chain, _, job_id, _, data, log, _ = traced
    trace_id = data["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16)
    assert data["parent_job"] is None  # the keeper started the request
    narration = narration_of(log)
    assert {e["trace_id"] for e in narration} == {trace_id}
    hop_jobs = {s["job_id"] for s in data["spans"] if s["kind"] == "job"} - {job_id}
    assert len(hop_jobs) == 3
    hive_url = next(h["url"] for h in anyio.run(chain.hives) if h["hive_id"] == "localhost")
    token = hive_token(chain.home)
    for hop_job in hop_jobs:
        if not any(
            e.get("hop_job") == hop_job and e.get("origin") == "hive:localhost" for e in narration
        ):
            continue  # the worker's job: its table is in its memory, its events say enough
        record = httpx.get(
            f"{hive_url}/v1/jobs/{hop_job}", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert (record["trace_id"], record["parent_job"]) == (trace_id, job_id)


def test_each_relayed_event_names_its_own_hops_job(traced: Any) -> None:
    _, _, job_id, _, _, log, _ = traced
    narration = narration_of(log)
    relayed = [e for e in narration if e.get("origin")]
    assert relayed and all(e["job_id"] == job_id for e in narration)
    for event in relayed:
        assert event["hop_job"] != job_id
    # Each hop's `job_start` says which job it ran as: the one its events name.
    for event in relayed:
        if event["action"] == "job_start":
            assert event["human"].endswith(f"as job {event['hop_job']}")
    assert {
        e["hop_job"]
        for e in relayed
        if e["actor"] == "llm-worker-rbee" and e["origin"].startswith("worker:")
    } != set()
