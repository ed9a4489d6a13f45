"""The queen's HTTP API in-process: error shapes, auth, upstream failures, queen operations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from jobs import AuthRequired, DaemonUnreachable, InvalidRequest, JobFinished, JobNotFound
from jobs.client import JobClient

if TYPE_CHECKING:
    from tests.support import RunningQueen

from queen.settings import QueenSettings
from tests.support import closed_hive_url, queen_settings, start_queen

DEADLINE_S = 20.0  # for a watch to end once unread


def sse_events(text: str) -> tuple[list[tuple[str, dict]], str]:
    """(kind, data) pairs and the terminator of a complete SSE body."""
    events, terminator = [], ""
    for frame in filter(None, text.split("\n\n")):
        fields = dict(line.split(": ", 1) for line in frame.split("\n") if not line.startswith(":"))
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
        elif "data" in fields:
            terminator = fields["data"]
    return events, terminator


JSON = {"content-type": "application/json"}

BAD_REQUESTS = [
    ("POST", "/v1/jobs", {"content": b"{oops", "headers": JSON}, 400, "not valid JSON"),
    ("POST", "/v1/jobs", {"json": ["queen_status"]}, 422, "JSON object"),
    ("POST", "/v1/jobs", {"json": {"operation": "teleport"}}, 422, "does not match"),
    ("POST", "/v1/jobs", {"json": {"operation": "model_delete"}}, 422, "model: Field required"),
    ("POST", "/v1/jobs", {"json": {"operation": "hive_list", "x": 1}}, 422, "Extra inputs"),
    ("GET", "/v1/jobs/job-missing", {}, 404, "no job 'job-missing'"),
    ("GET", "/v1/jobs/job-missing/stream", {}, 404, "no job 'job-missing'"),
    ("DELETE", "/v1/jobs/job-missing", {}, 404, "no job 'job-missing'"),
    ("GET", "/v1/jobs/job-missing/stream?after=-3", {}, 400, "after must be"),
    ("GET", "/v1/jobs/x/stream", {"headers": {"Last-Event-ID": "abc"}}, 400, "Last-Event-ID"),
    ("GET", "/v1/jobs?limit=lots", {}, 400, "limit must be"),
    ("GET", "/v2/nothing", {}, 404, "no route /v2/nothing"),
    ("PUT", "/v1/jobs", {}, 405, "PUT is not allowed"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "kwargs", "status", "fragment"), BAD_REQUESTS)
async def test_bad_input_gets_json_error(
    queen: RunningQueen, method: str, path: str, kwargs: dict, status: int, fragment: str
) -> None:
    """Every class of bad request answers its 4xx status with a {"error", "detail"} body."""
    async with httpx.AsyncClient(base_url=queen.url) as http:
        response = await http.request(method, path, **kwargs)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert fragment in body["error"]


@pytest.mark.anyio
async def test_unreachable_hive_is_502_and_logged(rbee_home: Path, free_tcp_port: int) -> None:
    """A hive that refuses connections gives 502, and the attempt and failure are in the job log."""
    gone = f"http://127.0.0.1:{free_tcp_port}"
    settings = queen_settings(rbee_home, hives={"gone": gone})
    async with start_queen(settings) as queen, httpx.AsyncClient(base_url=queen.url) as http:
        response = await http.post("/v1/jobs", json={"operation": "hive_status", "hive_id": "gone"})
        assert response.status_code == 502
        body = response.json()
        assert set(body) == {"error", "detail"}
        assert f"hive gone unreachable at {gone}: " in body["error"]
        assert body["detail"]["url"] == gone
        stream = await http.get(body["detail"]["sse_url"])
    events, terminator = sse_events(stream.text)
    humans = [d["human"] for kind, d in events if kind == "narration"]
    assert f"Handing hive_status to hive gone at {gone}" in humans
    assert any(h.startswith(f"hive gone unreachable at {gone}: ") for h in humans)
    assert events[-1][1]["state"] == "failed"
    assert terminator.startswith(f"[ERROR] hive gone unreachable at {gone}: ")


@pytest.mark.anyio
async def test_unknown_hive_fails_the_job(queen: RunningQueen) -> None:
    """An operation naming an unknown hive fails its job with a message saying what to do."""
    async with JobClient(queen.url) as client:
        events = []
        state = await client.submit_and_stream(
            {"operation": "hive_status", "hive_id": "mars"}, events.append
        )
    assert state == "failed"
    assert "no hive 'mars' is known" in events[-1].data["error"]
    assert "--hive ID=URL" in events[-1].data["error"]


@pytest.mark.anyio
async def test_queen_status_and_hive_list(queen: RunningQueen) -> None:
    """queen_status reports version, uptime, job counts and hives; hive_list lists the hives."""
    async with JobClient(queen.url) as client:
        events = []
        assert await client.submit_and_stream({"operation": "queen_status"}, events.append) == (
            "completed"
        )
        status = events[-1].data["result"]
        assert status["version"] == (await client.health())["version"]
        assert status["jobs"] == {"running": 1}
        assert [h["hive_id"] for h in status["hives"]] == ["localhost"]
        assert any(e.kind == "narration" and e.data["action"] == "status" for e in events)
        listed = []
        await client.submit_and_stream({"operation": "hive_list"}, listed.append)
        assert listed[-1].data["result"]["hives"][0]["url"] == closed_hive_url()
        # outside tests the default is the hive beside the queen, on the default port
        default = QueenSettings.build(paths=queen.settings.paths, env={})
        assert default.hives["localhost"] == "http://127.0.0.1:7835"
        jobs = await client.list_jobs()
        assert [j["operation"] for j in jobs] == ["hive_list", "queen_status"]
        with pytest.raises(JobFinished):
            await client.cancel(jobs[0]["job_id"])
        with pytest.raises(JobNotFound):
            await client.get_job("job-nope")


@pytest.mark.anyio
async def test_a_status_watch_nobody_reads_any_more_ends_itself(rbee_home: Path) -> None:
    """A watch read for longer than the idle limit keeps running; once its reader is gone
    (a crashed browser or keeper) it ends by itself, saying why, instead of for ever."""
    settings = queen_settings(rbee_home, watch_idle_s=1.0)
    watch = {"operation": "queen_status", "watch": True, "interval_s": 0.1}
    async with start_queen(settings) as queen, httpx.AsyncClient(base_url=queen.url) as http:
        job_id = (await http.post("/v1/jobs", json=watch)).json()["job_id"]
        snapshots = 0
        with anyio.fail_after(DEADLINE_S):
            async with http.stream("GET", f"/v1/jobs/{job_id}/stream") as stream:
                async for line in stream.aiter_lines():  # read well past the idle limit
                    snapshots += line.startswith("event: narration")
                    if snapshots == 25:
                        break
            assert (await http.get(f"/v1/jobs/{job_id}")).json()["state"] == "running"
            while (await http.get(f"/v1/jobs/{job_id}")).json()["state"] == "running":  # noqa: ASYNC110 - polled over HTTP
                await anyio.sleep(0.05)
        assert (await http.get(f"/v1/jobs/{job_id}")).json()["state"] == "completed"
        events, terminator = sse_events((await http.get(f"/v1/jobs/{job_id}/stream")).text)
    assert terminator == "[DONE]"
    last = [data["human"] for kind, data in events if kind == "narration"][-1]
    assert last.startswith("Nobody has read this status watch for 1 s; ending it")


@pytest.mark.anyio
async def test_token_required_when_set(rbee_home: Path) -> None:
    """With a token, requests without the right bearer get 401 JSON; /health stays open."""
    settings = queen_settings(rbee_home, token="s3cret")
    async with start_queen(settings) as queen, httpx.AsyncClient(base_url=queen.url) as http:
        missing = await http.get("/v1/jobs")
        wrong = await http.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
        right = await http.get("/v1/jobs", headers={"Authorization": "Bearer s3cret"})
        lower = await http.get("/v1/jobs", headers={"Authorization": "bearer s3cret"})
        other_scheme = await http.get("/v1/jobs", headers={"Authorization": "Basic s3cret"})
        health = await http.get("/health")
        async with JobClient(queen.url) as anonymous:
            with pytest.raises(AuthRequired):
                await anonymous.list_jobs()
        async with JobClient(queen.url, token="s3cret") as client:
            events = []
            await client.submit_and_stream({"operation": "queen_status"}, events.append)
    for response in (missing, wrong, other_scheme):
        assert response.status_code == 401
        assert set(response.json()) == {"error", "detail"}
        assert "requires a bearer token" in response.json()["error"]
    assert right.status_code == lower.status_code == health.status_code == 200
    assert events[-1].state == "completed"


@pytest.mark.anyio
async def test_openapi_describes_routes_and_operations(queen: RunningQueen) -> None:
    """GET /openapi.json lists the job routes and every operation's body schema."""
    async with httpx.AsyncClient(base_url=queen.url) as http:
        schema = (await http.get("/openapi.json")).json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/stream", "/health"} <= set(
        schema["paths"]
    )
    assert {"WorkerSpawn", "Infer", "QueenStatus", "Error"} <= set(schema["components"]["schemas"])


@pytest.mark.anyio
async def test_client_reports_unreachable_daemon(free_tcp_port: int) -> None:
    """JobClient turns a refused connection into DaemonUnreachable naming the URL."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    async with JobClient(url) as client:
        with pytest.raises(DaemonUnreachable, match=f"nothing answers at {url}"):
            await client.health()
        with pytest.raises(DaemonUnreachable):
            [e async for e in client.stream("job-x")]


@pytest.mark.anyio
async def test_infer_naming_an_unknown_worker_is_404(queen: RunningQueen) -> None:
    """`infer` with a worker_id no hive reports is the client's mistake: 404 with
    `{"error", "detail"}` naming the worker (the job exists, failed), and JobClient raises
    InvalidRequest for it, not "no such job"."""
    body = {"operation": "infer", "prompt": "hi", "model": "m", "worker_id": "w-gone"}
    async with httpx.AsyncClient(base_url=queen.url) as http:
        response = await http.post("/v1/jobs", json=body)
        assert response.status_code == 404, response.text
        reply = response.json()
        assert "no live worker 'w-gone'" in reply["error"]
        assert reply["detail"]["worker_id"] == "w-gone" and reply["detail"]["known"] == []
        job = (await http.get(f"/v1/jobs/{reply['detail']['job_id']}")).json()
    assert job["state"] == "failed"
    async with JobClient(queen.url) as client:
        with pytest.raises(InvalidRequest, match="no live worker 'w-gone'") as info:
            await client.submit(body)
    assert info.value.status == 404
