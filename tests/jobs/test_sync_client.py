"""SyncJobClient, the keeper's blocking twin of JobClient, against a real job server.

The server and the cutting proxy run on this test's event loop; the blocking client runs
in a worker thread, as it would run in a program with no event loop at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from jobs import DaemonUnreachable, JobEvent, JobFinished, JobNotFound
from jobs.client import SyncJobClient
from tests.support import cutting_proxy, emitter

if TYPE_CHECKING:
    from tests.support import JobsKit


def _events(url: str, job_id: str) -> list[JobEvent]:
    with SyncJobClient(url) as client:
        return list(client.stream(job_id))


@pytest.mark.anyio
async def test_stream_resumes_after_a_dropped_connection(kit: JobsKit, tmp_path: Path) -> None:
    """SyncJobClient.stream reconnects after a cut and yields every event exactly once."""
    async with kit.serve(tmp_path, {"model_list": emitter(2000)}) as served:
        with SyncJobClient(served.url) as client:
            job_id = await anyio.to_thread.run_sync(client.submit, {"operation": "model_list"})
        async with cutting_proxy(served.port, cut_after=50_000) as proxy:
            with anyio.fail_after(20):
                events = await anyio.to_thread.run_sync(
                    _events, f"http://127.0.0.1:{proxy['port']}", job_id
                )
            assert proxy["connections"] >= 2
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(1 for e in events if e.kind == "narration" and e.data["action"] == "tick") == 2000
    assert events[-1].is_final and events[-1].state == "completed"


@pytest.mark.anyio
async def test_errors_are_the_ones_the_async_client_raises(
    kit: JobsKit, tmp_path: Path, free_tcp_port: int
) -> None:
    """Nothing listening, an unknown job and cancelling a finished job raise
    DaemonUnreachable, JobNotFound and JobFinished, as JobClient does."""

    def run_all(url: str) -> tuple[str, list[dict]]:
        with SyncJobClient(url) as client:
            job_id = client.submit({"operation": "model_list"})
            list(client.stream(job_id))  # to the end: the job is finished
            with pytest.raises(JobFinished):
                client.cancel(job_id, timeout_s=5)
            with pytest.raises(JobNotFound):
                client.get_job("job-nope")
            return job_id, client.list_jobs()

    async with kit.serve(tmp_path, {"model_list": emitter(3)}) as served:
        job_id, jobs = await anyio.to_thread.run_sync(run_all, served.url)
    assert [job["job_id"] for job in jobs] == [job_id]
    with SyncJobClient(f"http://127.0.0.1:{free_tcp_port}") as nobody:
        with pytest.raises(DaemonUnreachable):
            nobody.submit({"operation": "model_list"})
        with pytest.raises(DaemonUnreachable):
            list(nobody.stream("job-1"))
