"""Streaming a model file over HTTP: resumed with Range, hashed as it arrives, narrated.

The bytes go to `<dest>.part`; an interrupted transfer is retried (a few times, with a
pause) from where it stopped with `Range: bytes=N-`, and a `.part` left by an earlier
failed job is resumed the same way. A server that ignores Range (200 instead of 206)
restarts the file from zero. Only a complete file whose sha256 matches the expected one
(when given) is renamed to `dest`; a mismatch deletes the bytes, and so does a full disk (a
`.part` kept for a resume would keep the disk full, and every job refused, until someone
found it). Servers' certificates
are checked against this machine's trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured), as
pip and curl check them, not against a bundle of httpx's own: a machine whose network
re-signs TLS with its own authority downloads models as it installs packages.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial as partial_fn
from pathlib import Path
from typing import BinaryIO

import anyio
import httpx

from hive.errors import ChecksumMismatch, DownloadError
from hive.gguf_layout import Stopped
from hive.modelfile import run_stoppable
from jobs import FULL_ERRNOS
from narration_core import Narrator

NARRATE = Narrator("rbee-hive")
CHUNK_BYTES = 1 << 20  # bytes per read from the response and per write to disk
PROGRESS_INTERVAL_S = 0.5  # at most two progress lines a second, however fast the link
ATTEMPTS = 4  # one transfer plus three resumes after an interruption
RETRY_PAUSE_S = 0.5  # pause before resuming, doubled per attempt
CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 60.0  # a stalled transfer fails (and resumes) after this long without bytes
HASH_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Downloaded:
    path: Path
    size: int
    sha256: str


async def download(
    url: str,
    dest: Path,
    *,
    headers: Mapping[str, str] | None = None,
    expected_sha256: str | None = None,
    label: str | None = None,
) -> Downloaded:
    """Fetch `url` into `dest`; raises DownloadError (the .part stays to resume, unless the
    bytes were wrong), or OSError when the disk is full (the .part removed, and narrated).
    `label` names the model in narration (default: the URL)."""
    part = dest.with_name(dest.name + ".part")
    label = label or url
    try:
        partial = _Partial(part, await run_stoppable(partial_fn(_hash_existing, part)))
        await _fetch(url, partial, headers, label)
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:  # a .part kept would keep the disk full: nothing runs
            _drop_part(part, label)
        raise
    sha256 = partial.digest.hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(url, actual=sha256, expected=expected_sha256)
    size = part.stat().st_size
    os.replace(part, dest)
    return Downloaded(dest, size, sha256)


async def _fetch(
    url: str, partial: _Partial, headers: Mapping[str, str] | None, label: str
) -> None:
    """Transfer into `partial`, resuming after interruptions; raises DownloadError."""
    part = partial.path
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    async with httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=True,
        trust_env=False,
        verify=ssl.create_default_context(),  # the system's trust store
        headers=dict(headers or {}),
    ) as client:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await _transfer(client, url, partial, label)
                break
            except httpx.HTTPStatusError as exc:
                raise DownloadError(url, f"HTTP {exc.response.status_code}") from None
            except (httpx.TransportError, httpx.DecodingError) as exc:
                reason = str(exc) or type(exc).__name__
                if attempt == ATTEMPTS:
                    raise DownloadError(url, f"{reason} (gave up after {ATTEMPTS} tries)") from exc
                have = part.stat().st_size if part.exists() else 0
                NARRATE.action("download_retry").target(label).level("warn").human(
                    f"Download of {label} interrupted at {_bytes(have)} ({reason}); resuming"
                ).emit()
                await anyio.sleep(RETRY_PAUSE_S * 2 ** (attempt - 1))


@dataclass(slots=True)
class _Partial:
    """The `.part` file and the sha256 of the bytes it holds so far."""

    path: Path
    digest: hashlib._Hash


async def _transfer(client: httpx.AsyncClient, url: str, partial: _Partial, label: str) -> None:
    part = partial.path
    have = part.stat().st_size if part.exists() else 0
    request_headers = {"Range": f"bytes={have}-"} if have else {}
    async with client.stream("GET", url, headers=request_headers) as response:
        if response.status_code == 416 and have:  # nothing left after `have`: complete
            return
        response.raise_for_status()
        if have and response.status_code != 206:
            have = 0  # the server ignored Range: start over
            partial.digest = hashlib.sha256()
        length = response.headers.get("content-length")
        total = have + int(length) if length is not None and length.isdigit() else None
        progress = _Progress(label, total, have)
        with part.open("ab" if have else "wb") as out:
            async for chunk in response.aiter_raw(CHUNK_BYTES):
                # Writing and hashing a MiB takes milliseconds: off the event loop.
                await anyio.to_thread.run_sync(_write, out, partial.digest, chunk)
                progress.advance(len(chunk))
        if total is not None and progress.done < total:
            raise httpx.RemoteProtocolError(f"the server sent {progress.done} of {total} bytes")
        progress.finish()


class _Progress:
    """Narrates percent, bytes, rate and ETA at most every PROGRESS_INTERVAL_S."""

    def __init__(self, label: str, total: int | None, start: int) -> None:
        self.label = label
        self.total = total
        self.start = start
        self.done = start
        self.t0 = time.monotonic()
        self.last = self.t0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            self._say(now)

    def finish(self) -> None:
        self._say(time.monotonic(), final=True)

    def _say(self, now: float, *, final: bool = False) -> None:
        elapsed = max(now - self.t0, 1e-6)
        rate = (self.done - self.start) / elapsed
        if self.total:
            percent = 100.0 * self.done / self.total
            eta = (self.total - self.done) / rate if rate > 0 else None
            left = "" if final or eta is None else f", ETA {eta:.0f} s"
            text = (
                f"{self.label}: {percent:.0f}% ({_bytes(self.done)} of {_bytes(self.total)}) "
                f"at {_bytes(rate)}/s{left}"
            )
        else:
            text = f"{self.label}: {_bytes(self.done)} at {_bytes(rate)}/s"
        builder = NARRATE.action("download_done" if final else "download_progress")
        builder.target(self.label).human(text).field("bytes", self.done).field(
            "total", self.total
        ).field("rate_bps", round(rate)).emit()


def _write(out: BinaryIO, digest: hashlib._Hash, chunk: bytes) -> None:
    out.write(chunk)
    digest.update(chunk)


def _hash_existing(part: Path, stop: threading.Event) -> hashlib._Hash:
    """A sha256 already fed with the bytes of an earlier partial download, if any; gives up
    within a block once `stop` is set (the job was cancelled)."""
    digest = hashlib.sha256()
    if part.exists():
        with part.open("rb") as f:
            while block := f.read(HASH_BLOCK_BYTES):
                if stop.is_set():
                    raise Stopped
                digest.update(block)
    return digest


def _drop_part(part: Path, label: str) -> None:
    """Remove the partial download that ran out of room, and say so: resuming it later
    saves little, while keeping it leaves every job of every rbee daemon refused."""
    try:
        size = part.stat().st_size
        part.unlink()
    except FileNotFoundError:
        return
    NARRATE.action("download_removed").target(label).level("warn").human(
        f"The disk is full: removed the partial download {part} ({_bytes(size)}); "
        "download it again once there is room"
    ).emit()


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop returns
