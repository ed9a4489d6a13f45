"""Impostors get nothing: a forged heartbeat advertising a worker receives no prompt, and a
process listening where this machine's hive would be receives no job and no credential
until a real hive has beaten (issue 19: "any local process can hijack inference").

The impostor is a real HTTP server on loopback that answers like a hive or a worker to
anyone and records every request.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from jobs import HiveBeat, JobError, RbeePaths, WorkerInfo
from jobs.client import JobClient
from queen.settings import LOCAL_HIVE_PIDFILE, QueenSettings
from tests.support import BeatAuth, queen_settings, recording_hive, start_queen

PROMPT = "my private prompt"


def fake_beat(hive_id: str, worker_url: str) -> dict[str, object]:
    port = int(worker_url.rsplit(":", 1)[1])
    worker = WorkerInfo(
        worker_id="w-evil", pid=4242, port=port, url=worker_url, model="tiny", state="ready"
    )
    beat = HiveBeat(hive_id=hive_id, url=worker_url, version="9", workers=[worker], ts=time.time())
    return beat.model_dump(mode="json")


@pytest.mark.anyio
async def test_a_forged_beat_is_refused_and_no_prompt_reaches_its_worker(rbee_home: Path) -> None:
    """Beats without the credential, advertising a ready `tiny` worker as a new hive and as
    the queen's own `localhost`, are refused (401). Prompts for `tiny` sent through the
    job API and the OpenAI door then fail, and the advertised worker never sees a request."""
    async with recording_hive() as impostor, start_queen(queen_settings(rbee_home)) as queen:
        async with httpx.AsyncClient(trust_env=False) as http:
            refused = [
                await http.post(f"{queen.url}/v1/heartbeats", json=fake_beat(hive, impostor.url))
                for hive in ("evil", "localhost")
            ]
        async with JobClient(queen.url) as client:
            # No worker but the forged one: the queen tries to start one on its own
            # hive, which is not running here (502).
            with pytest.raises(JobError):
                await client.submit_and_stream(
                    {"operation": "infer", "model": "tiny", "prompt": PROMPT}, lambda e: None
                )
        door = openai.AsyncOpenAI(base_url=f"{queen.url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError):
            await door.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": PROMPT}]
            )
        await door.close()
    assert [r.status_code for r in refused] == [401, 401]
    assert impostor.heads == []  # not one request, so no prompt


@pytest.mark.anyio
async def test_an_unannounced_local_hive_gets_no_job_and_no_credential(rbee_home: Path) -> None:
    """This machine's hive is known by default only (no hives.toml, no --hive). Whatever
    listens at its URL is asked to beat (an open request carrying nothing), and while no
    signed beat comes, a hive operation fails in one sentence naming the cure; the
    listener sees no job and no Authorization header. Once the real hive's credential
    signs a beat for `localhost`, the operation is sent there."""
    paths = RbeePaths.resolve(rbee_home).ensure()
    async with recording_hive() as impostor:
        (paths.run / LOCAL_HIVE_PIDFILE).write_text(json.dumps({"url": impostor.url}))
        settings = QueenSettings.build(paths=paths, env={})
        assert settings.implicit_hives == {"localhost"}
        async with start_queen(settings) as queen:
            async with JobClient(queen.url) as client:
                events: list[object] = []
                failed = await client.submit_and_stream(
                    {"operation": "model_list", "hive_id": "localhost"}, events.append
                )
            error = events[-1].data["error"]  # type: ignore[attr-defined]
            asked = list(impostor.heads)
            async with httpx.AsyncClient(auth=BeatAuth(rbee_home), trust_env=False) as http:
                beat = fake_beat("localhost", impostor.url) | {"workers": []}
                signed = await http.post(f"{queen.url}/v1/heartbeats", json=beat)
            async with JobClient(queen.url) as client:
                listed = await client.submit_and_stream(
                    {"operation": "model_list", "hive_id": "localhost"}, lambda event: None
                )
    assert failed == "failed"
    assert "has not announced itself" in error and "keeper hive start localhost" in error
    assert [head.split(b"\r\n")[0] for head in asked] == [b"POST /v1/heartbeats/now HTTP/1.1"]
    assert all(b"authorization" not in head.lower() for head in asked)
    assert signed.status_code == 204
    assert listed == "completed"  # the stand-in answers like a hive once one has beaten
    assert any(head.startswith(b"POST /v1/jobs ") for head in impostor.heads)
