"""Model downloads from a real HTTP server on loopback: Range resume, sha256, progress."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs.client import JobClient
from jobs.server import ServerConfig, bind_socket, create_app, open_job_server
from tests.support import narration, ranged_response, run_job, spawn_hive

pytestmark = pytest.mark.anyio

BLOB_BYTES = 3 * 1024 * 1024 + 123  # a few chunks, not a round number
SEND_BYTES = 64 * 1024  # the file server's write size


@dataclass
class FileServer:
    """Serves one blob at /m/model.gguf with Range support; the first `cut_first`
    responses stop halfway through and drop the connection."""

    blob: bytes
    cut_first: int = 0
    ranges: list[str | None] = field(default_factory=list)
    url: str = ""

    @asynccontextmanager
    async def serving(self, state: Path) -> AsyncIterator[FileServer]:
        async def model(request: Request) -> Response:
            header = request.headers.get("range")
            self.ranges.append(header)
            cut = len(self.ranges) <= self.cut_first
            return ranged_response(self.blob, header, cut=cut, send_bytes=SEND_BYTES)

        job_app = create_app(
            ServerConfig("file-server", "test", state),
            {},
            routes=[Route("/m/model.gguf", model, methods=["GET"])],
        )
        sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/m/model.gguf"
        async with open_job_server(job_app, sock):
            yield self


async def test_interrupted_download_resumes_with_range(rbee_home: Path, tmp_path: Path) -> None:
    """A transfer cut halfway is resumed from where it stopped (Range: bytes=N-), and the
    catalog's file has exactly the served bytes and their sha256; progress is narrated
    with percent, bytes, rate and ETA."""
    blob = os.urandom(BLOB_BYTES)
    sha = hashlib.sha256(blob).hexdigest()
    files = FileServer(blob, cut_first=1)
    async with (
        files.serving(tmp_path / "files"),
        spawn_hive(rbee_home) as hive,
        JobClient(hive.url, token=hive.token) as client,
    ):
        ref = f"{files.url}#sha256={sha}"
        events = await run_job(client, {"operation": "model_download", "model": ref})
        listed = await run_job(client, {"operation": "model_list"})
    assert events[-1].state == "completed", events[-1].data
    entry = events[-1].data["result"]
    assert files.ranges[0] is None
    assert len(files.ranges) == 2 and files.ranges[1] is not None
    resumed_at = int(files.ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at < BLOB_BYTES
    assert await anyio.Path(entry["path"]).read_bytes() == blob
    assert entry["sha256"] == sha and entry["size"] == BLOB_BYTES
    assert entry["status"] == "available" and entry["id"] == "model"
    actions = [action for _, action, _ in narration(events)]
    assert "download_retry" in actions and actions.count("download_done") == 1
    done = next(h for _, a, h in narration(events) if a == "download_done")
    assert "100% (3.0 MiB of 3.0 MiB)" in done and "/s" in done
    assert [m["id"] for m in listed[-1].data["result"]["models"]] == ["model"]


async def test_wrong_sha256_fails_and_registers_nothing(rbee_home: Path, tmp_path: Path) -> None:
    """Bytes whose sha256 differs from the expected one fail the job, naming both digests,
    and leave neither a catalog entry nor a file behind."""
    files = FileServer(os.urandom(100_000))
    wrong = "0" * 64
    async with (
        files.serving(tmp_path / "files"),
        spawn_hive(rbee_home) as hive,
        JobClient(hive.url, token=hive.token) as client,
    ):
        events = await run_job(
            client, {"operation": "model_download", "model": f"{files.url}#sha256={wrong}"}
        )
        listed = await run_job(client, {"operation": "model_list"})
    assert events[-1].state == "failed"
    assert f"expected {wrong}" in events[-1].data["error"]
    assert listed[-1].data["result"]["models"] == []
    models = rbee_home / "models" / "localhost"
    assert [p.name for p in models.iterdir()] == ["catalog.json"]


async def test_failed_download_resumes_in_the_next_job(rbee_home: Path, tmp_path: Path) -> None:
    """A download whose every try is cut fails (entry `failed`, partial bytes kept), and
    downloading the same ref again resumes from those bytes and completes the file."""
    from hive.download import ATTEMPTS

    blob = os.urandom(BLOB_BYTES)
    files = FileServer(blob, cut_first=ATTEMPTS)
    async with (
        files.serving(tmp_path / "files"),
        spawn_hive(rbee_home) as hive,
        JobClient(hive.url, token=hive.token) as client,
    ):
        first = await run_job(client, {"operation": "model_download", "model": files.url})
        failed = await run_job(client, {"operation": "model_list"})
        second = await run_job(client, {"operation": "model_download", "model": files.url})
    assert first[-1].state == "failed" and f"after {ATTEMPTS} tries" in first[-1].data["error"]
    assert [m["status"] for m in failed[-1].data["result"]["models"]] == ["failed"]
    assert second[-1].state == "completed", second[-1].data
    kept = int(files.ranges[ATTEMPTS].removeprefix("bytes=").rstrip("-"))  # type: ignore[union-attr]
    assert BLOB_BYTES // 2 < kept < BLOB_BYTES  # the next job started from the kept bytes
    result = second[-1].data["result"]
    assert result["sha256"] == hashlib.sha256(blob).hexdigest()
    assert await anyio.Path(result["path"]).read_bytes() == blob
