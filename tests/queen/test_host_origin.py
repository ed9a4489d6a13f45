"""Host and Origin checks: a web page cannot drive the queen through the user's browser
(foreign Host: DNS rebinding; foreign Origin or a non-JSON body: a cross-site request)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from jobs.server import ORIGINS_ENV
from tests.support import RunningQueen, queen_settings, start_queen

OPERATION = {"operation": "queen_status"}


async def _job_count(http: httpx.AsyncClient) -> int:
    listed = await http.get("/v1/jobs")
    assert listed.status_code == 200
    return len(listed.json()["jobs"])


@pytest.mark.anyio
async def test_a_foreign_host_is_refused(queen: RunningQueen) -> None:
    """GET /v1/jobs with `Host: evil.example` (a rebound name) is 403 with the JSON
    error shape; 127.0.0.1 and localhost with any port are served."""
    async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
        evil = await http.get("/v1/jobs", headers={"Host": "evil.example"})
        evil_port = await http.get("/v1/jobs", headers={"Host": "evil.example:7833"})
        local = await http.get("/v1/jobs", headers={"Host": "localhost:1"})
        plain = await http.get("/v1/jobs")
    assert evil.status_code == 403
    assert set(evil.json()) == {"error", "detail"}
    assert "evil.example" in evil.json()["error"]
    assert evil_port.status_code == 403
    assert local.status_code == 200
    assert plain.status_code == 200


@pytest.mark.anyio
async def test_a_cross_origin_text_plain_post_creates_no_job(queen: RunningQueen) -> None:
    """A "simple" cross-site POST (Origin elsewhere, text/plain) is refused and starts no
    job; without the Origin the text/plain body is still refused 415."""
    async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
        before = await _job_count(http)
        cross = await http.post(
            "/v1/jobs",
            content='{"operation": "queen_status"}',
            headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
        )
        plain = await http.post(
            "/v1/jobs",
            content='{"operation": "queen_status"}',
            headers={"Content-Type": "text/plain"},
        )
        door = await http.post(
            "/v1/chat/completions",
            content="{}",
            headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
        )
        after = await _job_count(http)
    assert cross.status_code in (403, 415)
    assert set(cross.json()) == {"error", "detail"}
    assert plain.status_code == 415
    assert door.status_code in (403, 415)
    assert after == before


@pytest.mark.anyio
async def test_a_same_origin_json_post_works(queen: RunningQueen) -> None:
    """What the dashboard sends: Origin of the queen itself, application/json."""
    async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
        created = await http.post(
            "/v1/jobs",
            json=OPERATION,
            headers={"Origin": queen.url, "Content-Type": "application/json; charset=utf-8"},
        )
    assert created.status_code in (200, 201, 202), created.text
    assert "job_id" in created.json()


@pytest.mark.anyio
async def test_the_openai_client_still_lists_models(queen: RunningQueen) -> None:
    """The official client sends no Origin: GET /v1/models works as before."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"{queen.url}/v1", api_key="unused", max_retries=0)
    try:
        models = await client.models.list()
    finally:
        await client.close()
    assert "builtin:tiny" in {m.id for m in models.data}


@pytest.mark.anyio
async def test_rbee_origins_admits_a_listed_origin(
    rbee_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An origin listed in RBEE_ORIGINS may POST JSON; another is still refused 403."""
    monkeypatch.setenv(ORIGINS_ENV, "http://friend.example:8080, http://other.example")
    async with (
        start_queen(queen_settings(rbee_home)) as queen,
        httpx.AsyncClient(base_url=queen.url, trust_env=False) as http,
    ):
        friend = await http.post(
            "/v1/jobs", json=OPERATION, headers={"Origin": "http://friend.example:8080"}
        )
        stranger = await http.post(
            "/v1/jobs", json=OPERATION, headers={"Origin": "http://evil.example"}
        )
    assert friend.status_code in (200, 201, 202), friend.text
    assert stranger.status_code == 403
