"""One trace per request across job servers: `traceparent` in, every job of the request
on the same trace with its parent job, relayed events naming their own hop's job, and
`GET /v1/jobs/{id}/trace` with phases that cover the job's time (real servers on
loopback, in this process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from jobs import format_traceparent, new_span_id, new_trace_id, parse_traceparent
from jobs.client import JobClient
from jobs.relay import submit_and_forward
from jobs.server import Job, Upstream
from narration_core import Narrator

if TYPE_CHECKING:
    from tests.support import JobsKit

HIVE = Narrator("rbee-hive")
QUEEN = Narrator("queen-rbee")


async def download(op: Any, job: Job) -> dict[str, Any]:
    HIVE.action("model_download").target("tiny").human("Writing tiny").emit()
    HIVE.action("model_ready").target("tiny").human("Model tiny available").emit()
    return {"model": "tiny"}


def forwarder(url: str) -> Upstream:
    async def handler(op: Any, job: Job) -> Any:
        QUEEN.action("model_download").human("Fetching it first").emit()
        async with JobClient(url) as client:
            return await submit_and_forward(client, op, into=job, hop="hive:gpu1")

    return Upstream(handler)


@asynccontextmanager
async def two_hops(kit: JobsKit, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    async with (
        kit.serve(tmp_path / "hive", {"model_download": download}) as hive,
        kit.serve(tmp_path / "queen", {"model_download": forwarder(hive.url)}) as queen,
    ):
        yield hive, queen


async def run(url: str, headers: dict[str, str] | None = None) -> tuple[str, list[dict]]:
    """Submit a model_download (with `headers`), follow it; its id and its events."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        reply = await http.post(
            "/v1/jobs", json={"operation": "model_download", "model": "tiny"}, headers=headers
        )
        assert reply.status_code == 201, reply.text
        job_id = reply.json()["job_id"]
    async with JobClient(url) as client:
        events = [{"event": e.kind, **e.data} async for e in client.stream(job_id)]
    return job_id, events


@pytest.mark.anyio
async def test_a_callers_traceparent_puts_every_job_of_the_request_on_its_trace(
    kit: JobsKit, tmp_path: Path
) -> None:
    """A client that traces its own request (W3C traceparent) finds the queen's job, the
    hive's job and every narrated line under its trace id; the hive's job names the
    queen's job as its parent, and each relayed line the job it was narrated in."""
    trace_id, span = new_trace_id(), new_span_id()
    async with two_hops(kit, tmp_path) as (hive, queen):
        job_id, events = await run(queen.url, {"traceparent": format_traceparent(trace_id, span)})
        async with JobClient(queen.url) as client:
            record = await client.get_job(job_id)
        async with JobClient(hive.url) as client:
            (hive_record,) = await client.list_jobs()
    assert (record["trace_id"], record["parent_job"]) == (trace_id, None)
    assert (hive_record["trace_id"], hive_record["parent_job"]) == (trace_id, job_id)
    narration = [e for e in events if e["event"] == "narration"]
    assert {e["trace_id"] for e in narration} == {trace_id}
    relayed = [e for e in narration if e.get("origin") == "hive:gpu1"]
    assert [e["action"] for e in relayed] == ["job_start", "model_download", "model_ready"]
    assert {(e["job_id"], e["hop_job"]) for e in relayed} == {(job_id, hive_record["job_id"])}
    assert all("hop_job" not in e for e in narration if "origin" not in e)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header",
    [None, "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "garbage", "01-abc", "00-ABCD-12-01"],
)
async def test_a_request_without_a_usable_traceparent_starts_its_own_trace(
    kit: JobsKit, tmp_path: Path, header: str | None
) -> None:
    async with kit.serve(tmp_path, {"model_download": download}) as served:
        job_id, events = await run(served.url, None if header is None else {"traceparent": header})
        async with JobClient(served.url) as client:
            record = await client.get_job(job_id)
    assert parse_traceparent(format_traceparent(record["trace_id"], new_span_id()))
    assert record["parent_job"] is None
    assert {e["trace_id"] for e in events if e["event"] == "narration"} == {record["trace_id"]}


@pytest.mark.anyio
async def test_the_trace_route_covers_the_jobs_time_hop_by_hop(
    kit: JobsKit, tmp_path: Path
) -> None:
    async with two_hops(kit, tmp_path) as (_, queen):
        job_id, _ = await run(queen.url)
        async with JobClient(queen.url) as client:
            trace = await client.trace(job_id)
    jobs = [(s["name"], s["hop"]) for s in trace["spans"] if s["kind"] == "job"]
    assert jobs == [("model_download", "test-server"), ("model_download", "hive gpu1")]
    phases = [s for s in trace["spans"] if s["kind"] == "phase"]
    assert [p["name"] for p in phases] == ["queued", "model download"]
    assert phases[0]["offset_s"] == 0.0
    covered = sum(p["duration_s"] for p in phases)
    assert covered == pytest.approx(trace["duration_s"], abs=1e-5)
    assert trace["spans"][1]["host"] == "gpu1"


@pytest.mark.anyio
async def test_the_trace_of_an_unknown_job_is_a_404(kit: JobsKit, tmp_path: Path) -> None:
    async with kit.serve(tmp_path, {}) as served, httpx.AsyncClient(base_url=served.url) as http:
        reply = await http.get("/v1/jobs/job-0000000000000000/trace")
    assert reply.status_code == 404
    assert "job-0000000000000000" in reply.json()["error"]


def test_without_an_otlp_endpoint_opentelemetry_is_never_imported(tmp_path: Path) -> None:
    """Tracing is always on; exporting is opt-in: a job server that ran a job has not
    loaded a single OpenTelemetry module (the extra costs nothing unless asked for)."""
    script = textwrap.dedent(
        f"""
        import sys, anyio, httpx
        from tests.support import serve_jobs

        async def work(op, job):
            return 1

        async def main():
            async with serve_jobs(__import__("pathlib").Path({str(tmp_path)!r}),
                                  {{"model_list": work}}) as served:
                async with httpx.AsyncClient(base_url=served.url) as http:
                    job = (await http.post("/v1/jobs", json={{"operation": "model_list"}})).json()
                    await http.get(f"/v1/jobs/{{job['job_id']}}/stream")
                    await http.get(f"/v1/jobs/{{job['job_id']}}/trace")

        anyio.run(main)
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_a_warm_requests_timeline_is_queue_dispatch_and_generation() -> None:
    """A prompt for a model already loaded: no download, spawn or load in its waterfall;
    the first token sits where the worker's slot produced it, and the phases still add up
    to the request's whole time."""
    from jobs import trace_spans

    t0, w = 1000.0, "job-00000000000000aa"
    queen = {"origin": None, "hop_job": None}
    worker = {"origin": "worker:w-1", "hop_job": w}
    events = [
        {"event": "state", "state": "running", "ts": t0 + 0.001},
        {"event": "narration", "action": "job_start", "ts": t0 + 0.002, **queen},
        {
            "event": "narration",
            "action": "job_start",
            "target": "infer",
            "ts": t0 + 0.010,
            **worker,
        },
        {"event": "narration", "action": "infer", "ts": t0 + 0.012, **queen},  # said late
        {"event": "narration", "action": "inference_start", "ts": t0 + 0.020, **worker},
        {"event": "narration", "action": "inference_complete", "ts": t0 + 0.300, **worker},
        {"event": "state", "state": "completed", "ts": t0 + 0.310},
    ]
    record = {
        "job_id": "job-00000000000000bb",
        "operation": "infer",
        "state": "completed",
        "created_at": t0,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "result": {
            "decode_time_ms": 285.0,
            "first_token_ms": 80.0,
            "hive_id": "gpu1",
            "worker_id": "w-1",
        },
    }
    trace = trace_spans(record, events, hop="queen", host="box")
    phases = [
        (s["name"], s["hop"], round(s["offset_s"], 3), round(s["duration_s"], 3))
        for s in trace["spans"]
        if s["kind"] != "job"
    ]
    assert phases == [
        ("queued", "queen", 0.0, 0.01),
        ("slot wait", "worker w-1", 0.01, 0.005),
        ("prompt evaluation", "worker w-1", 0.015, 0.08),
        ("first token", "worker w-1", 0.095, 0.0),
        ("generation", "worker w-1", 0.095, 0.205),
        ("relay", "queen", 0.3, 0.01),
    ]
    assert trace["duration_s"] == pytest.approx(0.31)
    assert {s["host"] for s in trace["spans"] if s["hop"] == "worker w-1"} == {"gpu1"}
