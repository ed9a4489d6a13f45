"""Errors rbee-hive raises; a job that hits one fails with its message.

HiveError
├── HiveConfigError   the command line / environment cannot be served as given (exit 2)
├── ModelNotFound     no catalog entry for that model id or reference
├── ModelInUse        a model cannot be deleted while a worker has it loaded
├── ModelFileRefused  a local file is not a model the hive will read (also a 400 request)
├── DownloadError     a download failed (the partial file stays, to resume)
│   └── ChecksumMismatch  the bytes did not match the expected sha256 (they are deleted)
├── WorkerNotFound    no worker with that id on this hive
└── WorkerStartError  a worker exited or did not become ready in time
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jobs import InvalidRequest


class HiveError(Exception):
    """Root of rbee-hive's own errors."""


class HiveConfigError(HiveError):
    """Raised when the settings are unsafe or malformed; the CLI exits 2 with the message."""


class ModelNotFound(HiveError):
    """Raised when a model id or reference is not in the catalog. `hive_id` makes the
    advice name the hive (`--hive gpu1`): a command without it would ask localhost."""

    def __init__(
        self, model: str, *, status: str | None = None, hive_id: str = "localhost"
    ) -> None:
        self.model = model
        self.status = status
        where = "" if hive_id == "localhost" else f" --hive {hive_id}"
        if status == "downloading":
            message = f"model {model!r} is still downloading; wait for its download job"
        elif status == "failed":
            message = (
                f"model {model!r} did not finish downloading; download it again "
                f"(`keeper model download {model}{where}`) to resume"
            )
        else:
            message = (
                f"model {model!r} is not in this hive's catalog; download it first "
                f"(`keeper model download REF{where}`, REF a path, URL, hf:… or builtin:…) or "
                f"list its models with `keeper model list{where}`"
            )
        super().__init__(message)


class ModelInUse(HiveError):
    """Raised when deleting a model that a running worker has loaded."""

    def __init__(self, model: str, workers: Sequence[str]) -> None:
        self.model = model
        self.workers = list(workers)
        super().__init__(
            f"model {model!r} is loaded by worker(s) {', '.join(self.workers)}; stop them "
            "first with `keeper worker stop ID`"
        )


class ModelFileRefused(HiveError, InvalidRequest):
    """Raised when a model path is not a regular GGUF file within reach (a device, FIFO,
    folder, a link to a file its maker may not read, sparse, truncated); `reason` never
    quotes the file's content. An InvalidRequest too, so `POST /v1/jobs` answers 400."""

    def __init__(self, path: Path, reason: str, *, target: Path | None = None) -> None:
        self.path = path
        self.reason = reason
        self.target = target if target != path else None  # the file behind a link
        link = f" (a link to {self.target})" if self.target is not None else ""
        detail = {"path": str(path), "reason": reason}
        if self.target is not None:
            detail["target"] = str(self.target)
        InvalidRequest.__init__(
            self,
            f"cannot use {path}{link} as a model: {reason}; point at a GGUF model file instead",
            detail=detail,
            status=400,
        )


class DownloadError(HiveError):
    """Raised when a model download fails; the catalog entry is marked failed."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"download of {url} failed: {reason}")


class ChecksumMismatch(DownloadError):
    """Raised when a downloaded file's sha256 differs from the expected one."""

    def __init__(self, url: str, *, actual: str, expected: str) -> None:
        self.actual = actual
        self.expected = expected
        super().__init__(url, f"sha256 is {actual}, expected {expected}; the file was discarded")


class WorkerNotFound(HiveError):
    """Raised when a worker id is unknown to this hive (never spawned, or already gone)."""

    def __init__(self, worker_id: str, known: Sequence[str]) -> None:
        self.worker_id = worker_id
        names = ", ".join(known) or "none"
        # The hive cannot name itself: the keeper, which knows which hive it asked, says
        # which one runs the worker when the queen knows (keeper.commands.worker).
        super().__init__(
            f"no worker {worker_id!r} on this hive (running: {names}); if it runs on another "
            "hive, name that one with --hive (`keeper status` shows every hive's workers)"
        )


class WorkerStartError(HiveError):
    """Raised when a spawned worker exits or is not ready in time; quotes what it said last
    (its own `failed` line when it narrated one), once: the rest is in the job and its log."""

    def __init__(self, worker_id: str, reason: str, said: str | None = None) -> None:
        self.worker_id = worker_id
        self.reason = reason
        self.said = said
        tail = f"; it said: {said}" if said else ""
        super().__init__(f"worker {worker_id} did not start: {reason}{tail}")
