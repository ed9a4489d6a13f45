"""`worker_spawn` of a ref the catalog lacks fetches it first, as `infer` does."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from jobs.client import JobClient
from tests.support import narration, run_job, spawn_hive

pytestmark = pytest.mark.anyio


async def test_spawning_a_ref_the_catalog_lacks_fetches_it_then_starts_the_worker(
    rbee_home: Path,
) -> None:
    """On an empty catalog, worker_spawn of builtin:tiny narrates the fetch into its own job,
    registers the model and starts a ready worker; a second spawn uses the catalog entry
    without fetching again."""
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        first = await run_job(client, {"operation": "worker_spawn", "model": "builtin:tiny"})
        again = await run_job(client, {"operation": "worker_spawn", "model": "builtin:tiny"})
        models = await run_job(client, {"operation": "model_list"})
        for spawned in (first, again):
            worker_id = spawned[-1].data["result"]["worker_id"]
            await run_job(client, {"operation": "worker_stop", "worker_id": worker_id})
    assert first[-1].state == "completed", first[-1].data
    assert first[-1].data["result"]["state"] == "ready"
    said = narration(first)
    assert any("not in this hive's catalog yet; fetching it first" in h for _, _, h in said)
    assert [a for _, a, _ in said].index("model_ready") < [a for _, a, _ in said].index(
        "worker_spawn"
    )
    assert again[-1].state == "completed"
    assert "model_ready" not in [a for _, a, _ in narration(again)]
    assert [m["id"] for m in models[-1].data["result"]["models"]] == ["tiny"]


async def test_spawning_an_unknown_id_or_a_bad_ref_is_refused_before_anything_runs(
    rbee_home: Path,
) -> None:
    """A ref with no such local file is a 400 from the POST; a plain id the catalog lacks
    fails its job naming `keeper model list`: nothing is fetched or spawned."""
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        async with httpx.AsyncClient(
            base_url=hive.url, trust_env=False, headers={"Authorization": f"Bearer {hive.token}"}
        ) as http:
            missing = await http.post(
                "/v1/jobs", json={"operation": "worker_spawn", "model": "/no/such.gguf"}
            )
        unknown = await run_job(client, {"operation": "worker_spawn", "model": "nope"})
        workers = await run_job(client, {"operation": "worker_list"})
    assert missing.status_code == 400, missing.text
    assert "no file /no/such.gguf" in missing.json()["error"]
    assert unknown[-1].state == "failed"
    assert "keeper model list" in unknown[-1].data["error"]
    assert "model_download" not in [a for _, a, _ in narration(unknown)]
    assert workers[-1].data["result"]["workers"] == []
