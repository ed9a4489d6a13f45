"""The worker's one door (POST /v1/inference) and its jobs kept in memory only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hive.tiny_model import write_tiny_model
from tests.support import WORKER_AUTH, infer, spawn_worker, text_of

pytestmark = pytest.mark.anyio


async def test_a_generation_writes_no_event_file_and_post_jobs_is_refused(
    rbee_home: Path, tmp_path: Path
) -> None:
    """A real worker runs a generation through POST /v1/inference and streams its tokens,
    yet its state folder holds nothing per job afterwards (no event log, no job table:
    the queen's log is the record); POST /v1/jobs answers 405 naming /v1/inference, while
    the job API still lists the job it made."""
    model = tmp_path / "tiny.gguf"
    write_tiny_model(model)
    async with spawn_worker(rbee_home, model) as worker:
        await worker.wait_action("ready")
        events = await infer(worker.url, "the queen", max_tokens=24, seed=1)
        assert events[-1].state == "completed" and text_of(events) != ""
        async with httpx.AsyncClient(
            base_url=worker.url, trust_env=False, headers=WORKER_AUTH
        ) as http:
            refused = await http.post("/v1/jobs", json={"operation": "infer", "prompt": "x"})
            # A field naming where to run is the queen's business: refused, not ignored.
            elsewhere = await http.post("/v1/inference", json={"prompt": "x", "model": "big"})
            nobody = await http.post(
                "/v1/inference", json={"prompt": "x"}, headers={"Authorization": "Bearer no"}
            )
            listed = (await http.get("/v1/jobs")).json()
        state_dir = rbee_home / "state" / "workers" / "w-test"
        left = sorted(p.relative_to(state_dir).as_posix() for p in state_dir.rglob("*"))
    assert refused.status_code == 405
    assert "/v1/inference" in refused.json()["error"] and "detail" in refused.json()
    assert elsewhere.status_code == 422 and "model" in elsewhere.json()["error"]
    assert nobody.status_code == 401
    assert [job["state"] for job in listed["jobs"]] == ["completed"]
    assert left == ["server.lock"]
