"""A hive on loopback serves only callers with its credential, and its workers get their own.

Another user's process on the same machine could otherwise read every prompt through the
hive's job list, spawn workers, or pick up the token a worker inherited (issue 19).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from jobs import worker_credential
from jobs.client import JobClient
from tests.support import run_job, spawn_hive

USER_TOKEN = "the-users-own-token"


@pytest.mark.anyio
async def test_a_hive_refuses_callers_without_its_credential(rbee_home: Path) -> None:
    """Without a credential, with a wrong one or with another hive's, every job route of a
    loopback hive answers 401 and nothing is run; /health stays open; the hive's own
    credential is served."""
    op = {"operation": "model_download", "model": "builtin:tiny"}
    async with (
        spawn_hive(rbee_home) as hive,
        spawn_hive(rbee_home, "--hive-id", "gpu2") as other,
        httpx.AsyncClient(base_url=hive.url, trust_env=False) as http,
    ):
        refused = [
            await http.get("/v1/jobs"),
            await http.post("/v1/jobs", json=op),
            await http.post("/v1/jobs", json=op, headers={"Authorization": "Bearer nope"}),
            await http.post(
                "/v1/jobs", json=op, headers={"Authorization": f"Bearer {other.token}"}
            ),
            await http.get("/v1/capabilities"),
        ]
        health = await http.get("/health")
        listed = await http.get("/v1/jobs", headers={"Authorization": f"Bearer {hive.token}"})
    assert [r.status_code for r in refused] == [401] * 5
    assert health.status_code == 200
    assert listed.status_code == 200 and listed.json()["jobs"] == []  # nothing ran


@pytest.mark.anyio
async def test_a_worker_gets_its_own_credential_and_none_of_the_hives_secrets(
    rbee_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hive started with the user's RBEE_TOKEN and its credential: the worker's
    environment holds neither, only a credential of its own, which is not the hive's."""
    monkeypatch.setenv("RBEE_TOKEN", USER_TOKEN)
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        await run_job(client, {"operation": "model_download", "model": "builtin:tiny"})
        spawn = await run_job(client, {"operation": "worker_spawn", "model": "builtin:tiny"})
        result = spawn[-1].data["result"]
        environ = psutil.Process(result["pid"]).environ()
    assert hive.token is not None
    assert "RBEE_TOKEN" not in environ and "RBEE_HIVE_CREDENTIAL" not in environ
    assert USER_TOKEN not in environ.values() and hive.token not in environ.values()
    assert environ["RBEE_WORKER_CREDENTIAL"] == worker_credential(hive.token, result["worker_id"])
