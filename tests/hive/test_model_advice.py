"""What the hive tells a person whose model request cannot be served: each case its own
sentence, never the command they just ran."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from jobs.client import JobClient
from tests.support import spawn_hive

pytestmark = pytest.mark.anyio


async def test_missing_local_file_and_unknown_delete_say_what_is_wrong(
    rbee_home: Path, tmp_path: Path
) -> None:
    """model_download of a local path that does not exist is a 400 saying there is no such
    file, and model_delete of an unknown id is a 404 pointing at `keeper model list`;
    neither advises downloading (the job's log says the same as the answer)."""
    missing = tmp_path / "no" / "such.gguf"
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        async with httpx.AsyncClient(
            base_url=hive.url, trust_env=False, headers={"Authorization": f"Bearer {hive.token}"}
        ) as http:
            download = await http.post(
                "/v1/jobs", json={"operation": "model_download", "model": str(missing)}
            )
            delete = await http.post(
                "/v1/jobs", json={"operation": "model_delete", "model": "nope"}
            )
        logged = [e async for e in client.stream(delete.json()["detail"]["job_id"])]
    assert download.status_code == 400, download.text
    said = download.json()["error"]
    assert f"no file {missing}" in said and "check the path" in said
    assert delete.status_code == 404, delete.text
    said = delete.json()["error"]
    assert "'nope' is not in this hive's catalog" in said and "keeper model list" in said
    for text in (download.json()["error"], said):
        assert "download it first" not in text and "keeper model download" not in text
    assert logged[-1].state == "failed" and logged[-1].data["error"] == said
