"""The job-server shell: program routes and lifespan, auth, the state lock and the socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs import CannotListen, StateFolderBusy
from jobs.server import (
    Job,
    JobService,
    ServerConfig,
    bind_socket,
    claim,
    create_app,
    open_job_server,
)

pytestmark = pytest.mark.anyio


async def test_program_routes_lifespan_and_token(tmp_path: Path) -> None:
    """A program's route overrides /health, its lifespan runs inside the service, and a
    token guards every route but /health."""
    seen: list[str] = []
    services: list[JobService] = []

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "loading"})

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        seen.append(f"enter running={services[0].is_running}")
        yield
        seen.append(f"exit running={services[0].is_running}")

    async def model_list(op: object, job: Job) -> str:
        return "listed"

    def handlers(service: JobService) -> dict[str, object]:
        services.append(service)
        return {"model_list": model_list}

    config = ServerConfig("test-server", "1.2.3", tmp_path, token="s3cret")
    job_app = create_app(
        config,
        handlers,  # type: ignore[arg-type]
        routes=[Route("/health", health, methods=["GET"])],
        lifespan=lifespan,
    )
    assert services == [job_app.service]
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with open_job_server(job_app, sock), httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health")).json() == {"status": "loading"}
        denied = await http.post("/v1/jobs", json={"operation": "model_list"})
        assert denied.status_code == 401 and "bearer token" in denied.json()["error"]
        headers = {"Authorization": "Bearer s3cret"}
        created = await http.post("/v1/jobs", json={"operation": "model_list"}, headers=headers)
        assert created.status_code == 201
        spec = (await http.get("/openapi.json", headers=headers)).json()
        assert spec["info"] == {"title": "test-server", "version": "1.2.3"}
    assert seen == ["enter running=True", "exit running=True"]


def test_claim_locks_the_folder_and_says_when_the_port_is_taken(tmp_path: Path) -> None:
    """claim() refuses a busy state folder and a taken port with one sentence each, and a
    failed bind releases the lock it took."""
    lock, sock = claim(tmp_path / "a", "127.0.0.1", 0)
    port = sock.getsockname()[1]
    with lock, sock:
        with pytest.raises(StateFolderBusy):
            claim(tmp_path / "a", "127.0.0.1", 0)
        with pytest.raises(CannotListen, match=rf"cannot listen on 127.0.0.1:{port} \(.+\); "):
            claim(tmp_path / "b", "127.0.0.1", port)
        second_lock, second_sock = claim(tmp_path / "b", "127.0.0.1", 0)  # not left locked
        second_lock.close()
        second_sock.close()


SERVER_MAIN = """
async def main():
    app = create_app(ServerConfig("test", "1", Path(sys.argv[1])), {"model_list": model_list})
    sock = bind_socket("127.0.0.1", 0)
    async def ready(url):
        print("URL", url, flush=True)
    await serve(app, sock, on_ready=ready)

anyio.run(main)
"""
SERVER_IMPORTS = """
import sys, anyio
from pathlib import Path
from jobs import exit_process
from jobs.server import ServerConfig, bind_socket, create_app, serve
"""
STUCK_SERVER = (
    SERVER_IMPORTS
    + """
async def model_list(op, job):
    with anyio.CancelScope(shield=True):  # a job that will not stop when cancelled
        await anyio.sleep(60)
"""
    + SERVER_MAIN
)


async def _wait_url(lines: AsyncIterator[str]) -> tuple[str, str]:
    """Read a server program's output until it prints its URL: (the text so far, the URL)."""
    import re

    import anyio

    text = ""
    with anyio.fail_after(30):
        async for chunk in lines:
            text += chunk
            if found := re.search(r"URL (\S+)\n", text):
                return text, found[1]
    raise AssertionError(f"the server ended before printing its URL: {text}")


@pytest.mark.anyio
async def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    """A server whose job ignores cancellation is still waiting after the first SIGTERM;
    the second SIGTERM ends it at once with status 128 + SIGTERM."""
    import signal
    import subprocess
    import sys

    import anyio
    from anyio.streams.text import TextReceiveStream

    process = await anyio.open_process(
        [sys.executable, "-c", STUCK_SERVER, str(tmp_path)], stderr=subprocess.STDOUT
    )
    async with process:
        assert process.stdout is not None
        lines = TextReceiveStream(process.stdout)
        text, url = await _wait_url(lines)
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            created = await http.post("/v1/jobs", json={"operation": "model_list"})
        assert created.status_code == 201
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            while "cancelling running jobs" not in text:
                text += await lines.receive()
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(5):  # the stuck job would hold a graceful stop for 60 s
            assert await process.wait() == 128 + signal.SIGTERM


QUICK_SERVER = (
    SERVER_IMPORTS
    + """
async def model_list(op, job):
    return "listed"
"""
    + SERVER_MAIN
    + """
print("served")  # stdout is a pipe, so this waits in the buffer: exit_process flushes it
exit_process(0)
"""
)
STOP_DEADLINE_S = 3.0  # generous, yet under the 5 s a shutdown waiting on the idle client takes


async def test_sigterm_stops_promptly_with_an_idle_client_connected(tmp_path: Path) -> None:
    """SIGTERM ends a server that an idle keep-alive client is connected to, exit 0, well
    before the graceful timeout, and exit_process flushes its buffered last words."""
    import os
    import signal
    import subprocess
    import sys

    import anyio
    from anyio.streams.text import TextReceiveStream

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    process = await anyio.open_process(
        [sys.executable, "-c", QUICK_SERVER, str(tmp_path)], stderr=subprocess.STDOUT, env=env
    )
    async with process:
        assert process.stdout is not None
        lines = TextReceiveStream(process.stdout)
        text, url = await _wait_url(lines)
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            created = await http.post("/v1/jobs", json={"operation": "model_list"})
            assert created.status_code == 201  # its connection stays open, idle, in the pool
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(STOP_DEADLINE_S):
                assert await process.wait() == 0
        text += "".join([chunk async for chunk in lines])
    assert "SIGTERM: cancelling running jobs and stopping" in text
    assert text.endswith("served\n"), text
