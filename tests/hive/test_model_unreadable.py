"""A local model file the hive cannot read is the file's problem, said as such: not
"cannot write to <the models folder>; check that disk" (a 507 for the hive's storage)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from jobs.client import JobClient
from tests.support import spawn_hive

pytestmark = pytest.mark.anyio

UNREADABLE = Path("/proc/self/mem")  # a file (is_file) whose first read fails with EIO


@pytest.mark.skipif(not UNREADABLE.is_file(), reason="needs Linux procfs")
async def test_a_local_model_that_cannot_be_read_names_the_file(
    rbee_home: Path, tmp_path: Path
) -> None:
    """model_download of a link to a file whose read fails: `POST /v1/jobs` answers 400
    naming the link, the file behind it and the read error, and the job's log says the
    same; the hive's models folder and its disk are not blamed."""
    model = tmp_path / "unreadable.gguf"
    model.symlink_to(UNREADABLE)
    async with spawn_hive(rbee_home) as hive:
        headers = {"Authorization": f"Bearer {hive.token}"} if hive.token else {}
        async with httpx.AsyncClient(base_url=hive.url, headers=headers, trust_env=False) as http:
            answer = await http.post(
                "/v1/jobs", json={"operation": "model_download", "model": str(model)}
            )
        async with JobClient(hive.url, token=hive.token) as client:
            events = [e async for e in client.stream(answer.json()["detail"]["job_id"])]
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.startswith(f"cannot use {model} (a link to /proc/"), error
    assert "/mem) as a model: it could not be read (Input/output error)" in error
    assert "disk" not in error and events[-1].state == "failed"
    assert events[-1].data["error"] == error
