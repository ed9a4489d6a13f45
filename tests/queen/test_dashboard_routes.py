"""The dashboard over HTTP: open without a token, with a strict CSP; the API stays locked."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from queen.dashboard import CONTENT_SECURITY_POLICY
from tests.support import queen_settings, start_queen

TOKEN = "s3cret-dashboard-token"
STATIC = Path(__file__).parents[2] / "queen" / "static"


@pytest.mark.anyio
async def test_page_and_assets_are_open_with_security_headers(rbee_home: Path) -> None:
    """`/` and every `/ui/` file answer 200 without a token, with the CSP, nosniff and no-cache."""
    async with (
        start_queen(queen_settings(rbee_home, token=TOKEN)) as queen,
        httpx.AsyncClient(base_url=queen.url) as http,
    ):
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self';" in CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-cache"
        assert '<script type="module" src="ui/app.js">' in page.text
        for name in sorted(p.name for p in STATIC.iterdir()):
            asset = await http.get(f"/ui/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert asset.headers["x-content-type-options"] == "nosniff"
        script = await http.get("/ui/app.js")
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        css = await http.get("/ui/style.css")
        assert css.headers["content-type"] == "text/css; charset=utf-8"
        again = await http.get("/ui/app.js", headers={"If-None-Match": script.headers["etag"]})
        assert again.status_code == 304


@pytest.mark.anyio
async def test_job_routes_still_need_the_token(rbee_home: Path) -> None:
    """Opening the dashboard's paths leaves every job route behind the bearer token."""
    async with (
        start_queen(queen_settings(rbee_home, token=TOKEN)) as queen,
        httpx.AsyncClient(base_url=queen.url) as http,
    ):
        for method, path in [
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/jobs/job-x"),
            ("GET", "/v1/jobs/job-x/stream"),
            ("DELETE", "/v1/jobs/job-x"),
            ("GET", "/openapi.json"),
            ("GET", "/uix"),
            ("GET", "/index.html"),
        ]:
            response = await http.request(method, path)
            assert response.status_code == 401, (method, path)
        ok = await http.get("/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


@pytest.mark.anyio
async def test_no_path_escapes_the_static_folder(rbee_home: Path) -> None:
    """`/ui/../…` and encoded variants reach neither the job API nor files outside the folder."""
    async with (
        start_queen(queen_settings(rbee_home, token=TOKEN)) as queen,
        httpx.AsyncClient(base_url=queen.url) as http,
    ):
        for raw in [
            "/ui/../v1/jobs",
            "/ui/%2e%2e/v1/jobs",
            "/ui/../dashboard.py",
            "/ui/%2e%2e/dashboard.py",
            "/ui/..%2fdashboard.py",
        ]:
            # httpx would normalise the dots away; send the path exactly as written.
            request = http.build_request("GET", "/")
            request.url = request.url.copy_with(raw_path=raw.encode())
            response = await http.send(request)
            assert response.status_code in (401, 404), raw
            assert '"jobs":' not in response.text, raw  # no listing
            assert "STATIC_PACKAGE" not in response.text, raw  # no source file


@pytest.mark.anyio
async def test_page_uses_no_inline_script_or_handlers(rbee_home: Path) -> None:
    """The page has no inline script, on* handler or style attribute (the CSP forbids them)."""
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert " style=" not in html
    scripts = "".join(p.read_text() for p in STATIC.glob("*.js"))
    assert "innerHTML" not in scripts and "insertAdjacentHTML" not in scripts
    assert "eval(" not in scripts and "document.write" not in scripts


@pytest.mark.anyio
async def test_status_is_a_read_behind_the_token_and_makes_no_job(rbee_home: Path) -> None:
    """GET /v1/status needs the token like the job routes, answers the snapshot the page
    renders (the hives the queen knows and those it can start), and leaves no job."""
    async with (
        start_queen(queen_settings(rbee_home, token=TOKEN)) as queen,
        httpx.AsyncClient(base_url=queen.url) as http,
    ):
        assert (await http.get("/v1/status")).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for _ in range(3):
            status = await http.get("/v1/status", headers=auth)
            assert status.status_code == 200
        snapshot = status.json()
        assert "localhost" in [h["hive_id"] for h in snapshot["hives"]]
        assert {"hive_id": "localhost", "where": "this machine"} in snapshot["configured"]
        assert snapshot["jobs"] == {}
        assert (await http.get("/v1/jobs", headers=auth)).json()["jobs"] == []
        described = (await http.get("/openapi.json", headers=auth)).json()
        assert "/v1/status" in described["paths"]


@pytest.mark.anyio
async def test_status_is_open_on_loopback_without_a_token(rbee_home: Path) -> None:
    """A queen without RBEE_TOKEN on loopback answers GET /v1/status to the user's tools."""
    async with (
        start_queen(queen_settings(rbee_home)) as queen,
        httpx.AsyncClient(base_url=queen.url) as http,
    ):
        status = await http.get("/v1/status")
        assert status.status_code == 200 and "version" in status.json()


@pytest.mark.anyio
async def test_a_hive_start_that_cannot_succeed_fails_in_one_sentence(rbee_home: Path) -> None:
    """The dashboard's Start for an alias the queen cannot reach fails its job saying how
    to configure it; for a hive whose port another program holds, saying so with a free
    port; neither leaves a pidfile or a log (nothing was started)."""
    from jobs.client import JobClient
    from tests.support import run_job

    async with (
        start_queen(queen_settings(rbee_home)) as queen,
        JobClient(queen.url) as client,
    ):
        unknown = await run_job(client, {"operation": "hive_start", "hive_id": "nosuchhive"})
        end = unknown[-1].data
        assert end["state"] == "failed"
        assert "'nosuchhive' is not in" in end["error"] and "[hives.nosuchhive]" in end["error"]

        # `localhost` is configured at a port this test process holds (closed_hive_url).
        taken = await run_job(client, {"operation": "hive_start", "hive_id": "localhost"})
        end = taken[-1].data
        assert end["state"] == "failed"
        assert "is taken by another program" in end["error"]
        assert "`keeper hive start --port " in end["error"]
    assert not list((rbee_home / "run").glob("hive-*.pid"))
    assert not (rbee_home / "logs" / "hive-localhost.log").exists()
