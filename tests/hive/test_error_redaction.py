"""A failed job's error is redacted wherever it is kept or shown, as narration is.

A real hive downloads from a URL with credentials in it; the port is closed, so the job
fails with an error that names the URL.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from jobs.client import JobClient
from tests.support import free_port, run_job, spawn_hive

pytestmark = pytest.mark.anyio

PASSWORD = ":pass@"  # as it stands in the URL
QUERY_SECRET = "SECRETVALUE"


def _assert_clean(text: str, where: str) -> None:
    assert PASSWORD not in text, f"{where}: {text}"
    assert QUERY_SECRET not in text, f"{where}: {text}"


async def test_a_failed_downloads_error_is_redacted_everywhere(rbee_home: Path) -> None:
    """Stream, `GET /v1/jobs/{id}` (its error and its params), the job list, the job's
    JSONL log, the SQLite registry and the catalog hold `[REDACTED]` where the URL had its
    credentials, and the password and the key appear nowhere."""
    url = f"http://user:pass@127.0.0.1:{free_port()}/m.gguf?key={QUERY_SECRET}"
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        job_id = await client.submit({"operation": "model_download", "model": url})
        events = [event async for event in client.stream(job_id)]
        shown = await client.get_job(job_id)
        jobs = await client.list_jobs()
        listed = await run_job(client, {"operation": "model_list"})
    _assert_clean(json.dumps(shown), "GET /v1/jobs/{id}")
    _assert_clean(json.dumps(jobs), "GET /v1/jobs")
    _assert_clean(json.dumps([e.data for e in events]), "the stream")
    _assert_clean(json.dumps(listed[-1].data), "model_list")
    final = events[-1]
    assert final.state == "failed", final.data
    assert "[REDACTED]" in final.data["error"]
    _assert_clean(final.data["error"], "stream")
    assert shown["state"] == "failed"
    assert shown["error"] == final.data["error"]

    state = next((rbee_home / "state").glob("hive-*"))
    logs = list(state.rglob(f"{job_id}.jsonl"))
    assert len(logs) == 1, sorted(p.name for p in state.rglob("*"))
    last = json.loads(logs[0].read_text().splitlines()[-1])
    assert last["kind"] == "state" and last["data"]["error"] == final.data["error"], last
    _assert_clean(logs[0].read_text(), "the JSONL log")
    with sqlite3.connect(state / "jobs.sqlite3") as conn:
        rows = conn.execute("SELECT error FROM jobs WHERE id = ?", (job_id,)).fetchall()
        everything = conn.execute("SELECT * FROM jobs").fetchall()
    assert rows == [(final.data["error"],)]
    _assert_clean(json.dumps(everything), "the SQLite registry")

    (model,) = listed[-1].data["result"]["models"]
    assert model["status"] == "failed" and "[REDACTED]" in model["error"]
    _assert_clean(model["error"], "model_list")
    (catalog,) = (rbee_home / "models").rglob("catalog.json")
    _assert_clean(catalog.read_text(), "catalog.json")
    (entry,) = json.loads(catalog.read_text())["models"]
    assert entry["status"] == "failed" and entry["error"] == model["error"], entry
