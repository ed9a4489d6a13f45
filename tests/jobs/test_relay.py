"""forward(): one job's stream re-emitted into another job across two real job servers."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from jobs import DaemonUnreachable, to_narration
from jobs.client import JobClient
from jobs.relay import submit_and_forward
from jobs.server import Job, Upstream
from narration_core import Narrator, relay_line
from tests.support import spawn_queen

if TYPE_CHECKING:
    from tests.support import JobsKit

HIVE = Narrator("rbee-hive")
DEADLINE_S = 20.0  # a cold interpreter on a busy 2-core box


async def upstream_work(op: Any, job: Job) -> dict[str, int]:
    """What a hive job does: narrate, pass on a worker's lines, stream tokens."""
    HIVE.action("spawn").human("Spawning worker w-1").emit()
    HIVE.action("progress").human("10%").field("percent", 10).field("origin", "x").emit()
    relay_line(
        "[llm-worker-rbee] model_load: Loaded tiny", "stdout", actor="w", origin="worker:w-1"
    )
    relay_line(
        "plain words from the worker", "stderr", actor="llm-worker-rbee", origin="worker:w-1"
    )
    for i, text in enumerate(["Hel", "lo"]):
        job.token(text, i)
    return {"tokens": 2}


async def upstream_fails(op: Any, job: Job) -> None:
    HIVE.action("load").human("Loading model").emit()
    raise RuntimeError("model file is corrupt")


async def upstream_waits(op: Any, job: Job) -> None:
    HIVE.action("wait").human("waiting for ever").emit()
    await anyio.sleep_forever()


def forwarder(url: str, hop: str = "hive:gpu1") -> Upstream:
    """The queen's side: submit the same operation one hop on, then relay it."""

    async def handler(op: Any, job: Job) -> Any:
        async with JobClient(url, max_reconnects=2) as client:
            return await submit_and_forward(client, op, into=job, hop=hop)

    return Upstream(handler)


@asynccontextmanager
async def two_servers(kit: JobsKit, tmp_path: Path, handlers: dict) -> AsyncIterator[tuple]:
    async with kit.serve(tmp_path / "hive", handlers) as hive:
        names = {name: forwarder(hive.url) for name in handlers}
        async with kit.serve(tmp_path / "queen", names) as queen:
            yield hive, queen


async def final_of(client: JobClient, job_id: str) -> tuple[list, dict]:
    events = [event async for event in client.stream(job_id)]
    return events, events[-1].data


@pytest.mark.anyio
async def test_forward_keeps_actor_extends_origin_and_takes_the_job(
    kit: JobsKit, tmp_path: Path
) -> None:
    """Relayed narration keeps its actor, gains the hop in its origin and the current job's id;
    output stays output, tokens stay tokens, and the upstream's result is the job's result."""
    async with (
        two_servers(kit, tmp_path, {"model_list": upstream_work}) as (_, queen),
        JobClient(queen.url) as client,
    ):
        job_id = await client.submit({"operation": "model_list"})
        events, final = await final_of(client, job_id)
    assert final["state"] == "completed"
    assert final["result"] == {"tokens": 2}
    relayed = [e.data for e in events if e.kind in ("narration", "output")]
    assert all(d["job_id"] == job_id for d in relayed)
    by_action = {(d["actor"], d["action"]): d for d in relayed}
    assert by_action["rbee-hive", "spawn"]["origin"] == "hive:gpu1"
    progress = by_action["rbee-hive", "progress"]
    assert progress["origin"] == "hive:gpu1"
    assert progress["fields"] == {"percent": 10, "origin": "x"}
    assert by_action["llm-worker-rbee", "model_load"]["origin"] == "hive:gpu1/worker:w-1"
    output = by_action["llm-worker-rbee", "output"]
    assert (output["stream"], output["origin"], output["human"]) == (
        "stderr",
        "hive:gpu1/worker:w-1",
        "plain words from the worker",
    )
    assert [e.data for e in events if e.kind == "token"] == [
        {"t": "Hel", "i": 0},
        {"t": "lo", "i": 1},
    ]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    states = [e.data["state"] for e in events if e.kind == "state"]
    assert states == ["running", "completed"]  # the upstream's own states are not copied


@pytest.mark.anyio
async def test_two_hops_stack_origins(kit: JobsKit, tmp_path: Path) -> None:
    """Each hop puts its name in front of the origin the event already had."""
    async with (
        two_servers(kit, tmp_path, {"model_list": upstream_work}) as (_, middle),
        kit.serve(tmp_path / "top", {"model_list": forwarder(middle.url, "queen:q")}) as top,
        JobClient(top.url) as client,
    ):
        job_id = await client.submit({"operation": "model_list"})
        events, final = await final_of(client, job_id)
    assert final["state"] == "completed"
    origins = {e.data["action"]: e.data.get("origin") for e in events if e.kind == "narration"}
    assert origins["model_load"] == "queen:q/hive:gpu1/worker:w-1"
    assert origins["spawn"] == "queen:q/hive:gpu1"
    assert all(e.data["job_id"] == job_id for e in events if e.kind == "narration")


@pytest.mark.anyio
async def test_upstream_failure_fails_the_job_naming_it(kit: JobsKit, tmp_path: Path) -> None:
    """A failed upstream job fails the current one with the hop, its job id and its error."""
    async with (
        two_servers(kit, tmp_path, {"model_delete": upstream_fails}) as (hive, queen),
        JobClient(queen.url) as client,
    ):
        job_id = await client.submit({"operation": "model_delete", "model": "m"})
        events, final = await final_of(client, job_id)
        async with JobClient(hive.url) as hive_client:
            hive_job = (await hive_client.list_jobs())[0]
    assert final["state"] == "failed"
    assert final["error"] == f"hive gpu1 job {hive_job['job_id']} failed: model file is corrupt"
    actions = [e.data["action"] for e in events if e.kind == "narration"]
    assert "load" in actions


@pytest.mark.anyio
async def test_cancelling_the_job_cancels_the_upstream_job(kit: JobsKit, tmp_path: Path) -> None:
    """DELETE on the current job reaches the upstream job, which ends cancelled."""
    async with (
        two_servers(kit, tmp_path, {"model_download": upstream_waits}) as (hive, queen),
        JobClient(queen.url) as client,
        JobClient(hive.url) as hive_client,
    ):
        job_id = await client.submit({"operation": "model_download", "model": "m"})
        with anyio.fail_after(DEADLINE_S):
            async for event in client.stream(job_id):
                if event.kind == "narration" and event.data["action"] == "wait":
                    break  # the upstream job is running and relayed
        assert await client.cancel(job_id) == "cancelled"
        hive_job = (await hive_client.list_jobs())[0]
        assert hive_job["state"] == "cancelled"


@pytest.mark.anyio
async def test_unreachable_upstream_answers_502_and_names_the_hive(
    kit: JobsKit, tmp_path: Path, free_tcp_port: int
) -> None:
    """Nothing upstream: POST gets 502; the job fails `hive <id> unreachable at <url>: …`."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    async with (
        kit.serve(tmp_path, {"model_list": forwarder(url)}) as queen,
        JobClient(queen.url) as client,
    ):
        with pytest.raises(DaemonUnreachable) as caught:
            await client.submit({"operation": "model_list"})
        jobs = await client.list_jobs()
        stream = await kit.read_stream(f"{queen.url}/v1/jobs/{jobs[0]['job_id']}/stream")
    assert caught.value.url == url
    assert stream.terminator is not None
    assert stream.terminator.startswith(f"[ERROR] hive gpu1 unreachable at {url}: ")


@pytest.mark.anyio
async def test_upstream_that_vanishes_fails_the_job(kit: JobsKit, tmp_path: Path) -> None:
    """A real upstream process killed mid-job fails the current job as unreachable."""
    async with (
        spawn_queen(tmp_path / "upstream") as upstream,
        kit.serve(tmp_path / "down", {"queen_status": forwarder(upstream.url)}) as down,
        JobClient(down.url) as client,
    ):
        job_id = await client.submit(
            {"operation": "queen_status", "watch": True, "interval_s": 0.05}
        )
        with anyio.fail_after(DEADLINE_S):
            async for event in client.stream(job_id):
                if event.kind == "narration" and event.data["action"] == "status":
                    assert event.data["actor"] == "queen-rbee"
                    assert event.data["origin"] == "hive:gpu1"
                    break
        upstream.process.send_signal(signal.SIGKILL)
        with anyio.fail_after(DEADLINE_S):
            _, final = await final_of(client, job_id)
    assert final["state"] == "failed"
    assert final["error"].startswith(f"hive gpu1 unreachable at {upstream.url}: ")


def test_to_narration_never_drops_an_event() -> None:
    """Records rebuild; malformed records and unknown kinds become visible output lines."""
    good = to_narration("narration", {"actor": "a", "action": "b", "human": "c", "origin": "o"})
    assert (good.actor, good.origin, good.stream) == ("a", "o", None)
    bad = to_narration("output", {"human": "no actor"})
    assert bad.stream == "stdout" and "no actor" in bad.human
    future = to_narration("progress", {"p": 1})
    assert (future.action, future.stream, future.human) == ("progress", "stdout", '{"p": 1}')
