"""The SSE route over real HTTP: replay, fan-out, resume, terminators, cleanup."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from jobs.client import JobClient
from jobs.server import Job
from narration_core import Narrator
from tests.support import cutting_proxy, emitter

if TYPE_CHECKING:
    from tests.support import JobsKit


NARRATE = Narrator("tester")


async def wait_final(client: JobClient, job_id: str) -> dict:
    """Poll the job under a deadline until it reaches a final state."""
    final = {"completed", "failed", "cancelled"}
    with anyio.fail_after(10):
        while (job := await client.get_job(job_id))["state"] not in final:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    return job


@pytest.mark.anyio
@pytest.mark.parametrize("keep_finished", [16, 0], ids=["memory", "disk"])
async def test_late_subscriber_gets_whole_log(
    kit: JobsKit, tmp_path: Path, keep_finished: int
) -> None:
    """Narration emitted before any client connects reaches one connecting after the end."""
    async with kit.serve(tmp_path, {"model_list": emitter(500)}) as served:
        served.service.store.keep_finished = keep_finished
        async with JobClient(served.url) as client:
            job_id = await client.submit({"operation": "model_list"})
            assert (await wait_final(client, job_id))["state"] == "completed"
        stream = await kit.read_stream(f"{served.url}/v1/jobs/{job_id}/stream")
    assert stream.seqs == list(range(1, len(stream.events) + 1))
    ticks = [
        d["human"] for _, kind, d in stream.events if kind == "narration" and d["action"] == "tick"
    ]
    assert ticks == [f"event {i}" for i in range(500)]
    assert stream.events[-1][1:] == ("state", stream.events[-1][2])
    assert stream.events[-1][2]["state"] == "completed"
    assert stream.events[-1][2]["result"] == {"emitted": 500}
    assert stream.terminator == "[DONE]"


async def _raw_request(port: int, path: str) -> SocketStream:
    sock = await anyio.connect_tcp("127.0.0.1", port)
    await sock.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    return sock


async def _read_all(sock: SocketStream) -> str:
    chunks = []
    async for chunk in sock:
        chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"200" in head.split(b"\r\n")[0]
    return _dechunk(body).decode()


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2


@pytest.mark.anyio
async def test_fan_out_identical_and_stalled_reader_does_not_block(
    kit: JobsKit, tmp_path: Path
) -> None:
    """Three subscribers get identical sequences; one reading nothing holds nobody back."""
    gate = anyio.Event()
    n = 30_000  # far more than the socket buffers hold, so the stalled reader is truly stuck
    async with (
        kit.serve(tmp_path, {"model_list": emitter(n, gate)}) as served,
        JobClient(served.url) as client,
    ):
        job_id = await client.submit({"operation": "model_list"})
        path = f"/v1/jobs/{job_id}/stream"
        stalled = await _raw_request(served.port, path)  # connected, never read until later
        results: dict[str, object] = {}

        async def subscriber(name: str) -> None:
            results[name] = await kit.read_stream(served.url + path)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(subscriber, "a")
                tg.start_soon(subscriber, "b")
                await kit.wait_until(lambda: served.service.statistics()["open_streams"] == 3)
                gate.set()
            # Both readers saw the whole job while the stalled one had read nothing.
            assert served.service.statistics()["open_streams"] == 1
            async with stalled:
                results["stalled"] = kit.parse_sse(await _read_all(stalled))
    a, b, c = results["a"], results["b"], results["stalled"]
    assert a.events == b.events == c.events  # type: ignore[attr-defined]
    assert a.terminator == b.terminator == c.terminator == "[DONE]"  # type: ignore[attr-defined]
    assert len([e for e in a.events if e[2].get("action") == "tick"]) == n  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_resume_from_last_event_id_and_after(kit: JobsKit, tmp_path: Path) -> None:
    """Last-Event-ID or ?after=N yields exactly the remaining events: no gaps, no repeats."""
    async with (
        kit.serve(tmp_path, {"model_list": emitter(100)}) as served,
        JobClient(served.url) as client,
    ):
        job_id = await client.submit({"operation": "model_list"})
        await wait_final(client, job_id)
        url = f"{served.url}/v1/jobs/{job_id}/stream"
        full = await kit.read_stream(url)
        last = full.seqs[-1]
        by_header = await kit.read_stream(url, headers={"Last-Event-ID": "40"})
        by_query = await kit.read_stream(url + "?after=40")
        at_end = await kit.read_stream(url, headers={"Last-Event-ID": str(last)})
    assert by_header.events == by_query.events == full.events[40:]
    assert by_header.seqs == list(range(41, last + 1))
    assert at_end.events == [] and at_end.terminator == "[DONE]"


@pytest.mark.anyio
async def test_client_resumes_after_dropped_connection(kit: JobsKit, tmp_path: Path) -> None:
    """JobClient.stream reconnects after a cut and yields every event exactly once."""
    async with (
        kit.serve(tmp_path, {"model_list": emitter(2000)}) as served,
        JobClient(served.url) as client,
    ):
        job_id = await client.submit({"operation": "model_list"})
        await wait_final(client, job_id)
        async with (
            cutting_proxy(served.port, cut_after=50_000) as proxy,
            JobClient(f"http://127.0.0.1:{proxy['port']}") as client,
        ):
            events = [e async for e in client.stream(job_id)]
            assert proxy["connections"] >= 2
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(1 for e in events if e.kind == "narration" and e.data["action"] == "tick") == 2000
    assert events[-1].is_final and events[-1].state == "completed"


@pytest.mark.anyio
async def test_narration_from_worker_thread_lands_in_job_log(kit: JobsKit, tmp_path: Path) -> None:
    """Narration from anyio.to_thread.run_sync inside a job lands in its log, in order."""

    def blocking_work() -> None:
        for i in range(200):
            NARRATE.action("decode").human(f"step {i}").emit()

    async def handler(op: object, job: Job) -> None:
        await anyio.to_thread.run_sync(blocking_work)

    async with (
        kit.serve(tmp_path, {"model_list": handler}) as served,
        JobClient(served.url) as client,
    ):
        job_id = await client.submit({"operation": "model_list"})
        events = [e async for e in client.stream(job_id)]
    steps = [e.data for e in events if e.kind == "narration" and e.data["action"] == "decode"]
    assert [d["human"] for d in steps] == [f"step {i}" for i in range(200)]
    assert all(d["job_id"] == job_id for d in steps)


@pytest.mark.anyio
async def test_failure_before_any_output_ends_with_error_terminator(
    kit: JobsKit, tmp_path: Path
) -> None:
    """A handler that raises at once ends its stream with a failed state and `[ERROR] <message>`."""

    async def handler(op: object, job: Job) -> None:
        raise RuntimeError("disk on fire\nsecond line")

    async with (
        kit.serve(tmp_path, {"model_list": handler}) as served,
        JobClient(served.url) as client,
    ):
        job_id = await client.submit({"operation": "model_list"})
        other = await client.submit({"operation": "infer", "prompt": "hi", "model": "m"})
        stream = await kit.read_stream(f"{served.url}/v1/jobs/{job_id}/stream")
        missing = await kit.read_stream(f"{served.url}/v1/jobs/{other}/stream")
    assert stream.events[-1][2]["state"] == "failed"
    assert stream.terminator == "[ERROR] disk on fire second line"
    assert missing.terminator == (
        "[ERROR] this server does not run operation 'infer' yet; it runs model_list"
    )


@pytest.mark.anyio
async def test_cancel_ends_stream_with_cancelled(kit: JobsKit, tmp_path: Path) -> None:
    """DELETE cancels a running job (stream ends [CANCELLED]); again 409, unknown 404."""
    async with (
        kit.serve(tmp_path, {"model_list": emitter(1, anyio.Event())}) as served,
        JobClient(served.url) as client,
        httpx.AsyncClient(base_url=served.url) as http,
    ):
        job_id = await client.submit({"operation": "model_list"})
        async with anyio.create_task_group() as tg:
            result: dict[str, object] = {}

            async def follow() -> None:
                result["stream"] = await kit.read_stream(f"{served.url}/v1/jobs/{job_id}/stream")

            tg.start_soon(follow)
            reply = await http.delete(f"/v1/jobs/{job_id}")
        again = await http.delete(f"/v1/jobs/{job_id}")
        unknown = await http.delete("/v1/jobs/job-nope")
        record = await client.get_job(job_id)
    assert reply.status_code == 200 and reply.json() == {"job_id": job_id, "state": "cancelled"}
    stream = result["stream"]
    assert stream.events[-1][2]["state"] == "cancelled"  # type: ignore[attr-defined]
    assert stream.terminator == "[CANCELLED]"  # type: ignore[attr-defined]
    assert again.status_code == 409 and again.json()["detail"]["state"] == "cancelled"
    assert unknown.status_code == 404 and set(unknown.json()) == {"error", "detail"}
    assert [t["state"] for t in record["transitions"]] == ["queued", "running", "cancelled"]


@pytest.mark.anyio
async def test_idle_stream_sends_keepalives_and_waits_for_the_end(
    kit: JobsKit, tmp_path: Path
) -> None:
    """An idle stream gets keep-alive comments and ends only when the job does, however long."""
    gate = anyio.Event()
    async with (
        kit.serve(tmp_path, {"model_list": emitter(3, gate)}, keepalive_s=0.02) as served,
        JobClient(served.url) as client,
        httpx.AsyncClient(timeout=10) as http,
    ):
        job_id = await client.submit({"operation": "model_list"})
        url = f"{served.url}/v1/jobs/{job_id}/stream"
        async with http.stream("GET", url) as response:
            text = ""
            with anyio.fail_after(10):
                async for chunk in response.aiter_text():
                    text += chunk
                    if text.count(": keep-alive") >= 3 and not gate.is_set():
                        assert "[DONE]" not in text
                        gate.set()
    stream = kit.parse_sse(text)
    assert stream.terminator == "[DONE]"
    assert len(stream.comments) >= 3


@pytest.mark.anyio
async def test_disconnected_subscribers_leave_nothing_behind(kit: JobsKit, tmp_path: Path) -> None:
    """Clients that hang up on a live job's stream have their server-side stream torn down."""
    gate = anyio.Event()
    async with (
        kit.serve(tmp_path, {"model_list": emitter(1, gate)}) as served,
        JobClient(served.url) as client,
    ):
        job_id = await client.submit({"operation": "model_list"})
        for _ in range(5):
            url = f"{served.url}/v1/jobs/{job_id}/stream"
            async with httpx.AsyncClient() as http, http.stream("GET", url) as r:
                async for _chunk in r.aiter_bytes():
                    break  # got the first events; hang up
        await kit.wait_until(lambda: served.service.statistics()["open_streams"] == 0)
        assert served.service.statistics()["running_jobs"] == 1
        gate.set()
        assert (await wait_final(client, job_id))["state"] == "completed"
