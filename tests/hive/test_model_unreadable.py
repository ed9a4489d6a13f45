"""A local model file the hive cannot read is the file's problem, said as such: not
"cannot write to <the models folder>; check that disk" (a 507 for the hive's storage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.client import JobClient
from tests.support import spawn_hive

pytestmark = pytest.mark.anyio

UNREADABLE = Path("/proc/self/mem")  # a file (is_file) whose first read fails with EIO


@pytest.mark.skipif(not UNREADABLE.is_file(), reason="needs Linux procfs")
async def test_a_local_model_that_cannot_be_read_names_the_file(
    rbee_home: Path, tmp_path: Path
) -> None:
    """model_download of a path whose read fails: the job fails naming that file and
    telling to check it; the hive's models folder and its disk are not blamed."""
    model = tmp_path / "unreadable.gguf"
    model.symlink_to(UNREADABLE)
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url) as client:
        job_id = await client.submit({"operation": "model_download", "model": str(model)})
        events = [e async for e in client.stream(job_id)]
    final = events[-1]
    assert final.state == "failed"
    error = final.data["error"]
    assert error.startswith("cannot read /proc/") and "/mem (" in error, error
    assert "check that file" in error and "disk" not in error
