"""worker_spawn's refusals: a device the hive does not have is refused before any worker
starts."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from jobs.client import JobClient
from tests.support import run_job, spawn_hive

pytestmark = pytest.mark.anyio


async def test_a_device_the_hive_lacks_is_refused_before_spawning(rbee_home: Path) -> None:
    """worker_spawn with a device not in GET /v1/capabilities' devices (gpu, cuda:x, and
    cuda:N past its GPUs) is a 400 naming the devices the hive has, and no worker is
    started (nothing listed, no worker log)."""
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        download = await run_job(client, {"operation": "model_download", "model": "builtin:tiny"})
        assert download[-1].state == "completed", download[-1].data
        async with httpx.AsyncClient(
            base_url=hive.url, trust_env=False, headers={"Authorization": f"Bearer {hive.token}"}
        ) as http:
            devices = (await http.get("/v1/capabilities")).json()["devices"]
            answers = {}
            for device in ("gpu", "cuda:x", f"cuda:{len(devices)}"):
                answers[device] = await http.post(
                    "/v1/jobs",
                    json={"operation": "worker_spawn", "model": "tiny", "device": device},
                )
        listed = await run_job(client, {"operation": "worker_list"})
    for device, answer in answers.items():
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == (
            f"this hive has no device {device!r}; it has: {', '.join(devices)}"
        )
    assert listed[-1].data["result"]["workers"] == []
    assert not await anyio.Path(rbee_home / "logs" / "workers").exists() or not [
        p async for p in anyio.Path(rbee_home / "logs" / "workers").iterdir()
    ]
