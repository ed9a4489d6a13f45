"""Errors the job plumbing raises; servers map them to `{"error", "detail"}` responses.

JobError
├── JobNotFound           no job with that id (404)
├── JobFinished           the job already ended, so it cannot be cancelled (409)
├── InvalidRequest        the body or a parameter is wrong (400 / 422)
├── AuthRequired          the server wants a bearer token (401)
├── OperationUnavailable  this server has no handler for the operation (the job fails)
├── DaemonUnreachable     the queen, hive or worker at a URL did not answer (502)
│   ├── UpstreamUnreachable   …while a job was forwarding to it (names the hop)
│   └── NotAJobServer         something answers there, but not an rbee queen or hive
├── UpstreamFailed        the upstream job a job forwarded to failed or was lost
├── StorageError          the state folder cannot be written: disk full or I/O error (507)
├── ServiceUnavailable    the job service is not running (503)
├── StateFolderBusy       another server already serves this state folder (start-up)
└── CannotListen          the server's address cannot be bound (start-up)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class JobError(Exception):
    """Root of every error raised by `jobs`; `status` is the HTTP status servers answer with."""

    status = 500

    @property
    def detail(self) -> Any:
        return None


class JobNotFound(JobError):
    """Raised when a job id is unknown (never created, or pruned by retention)."""

    status = 404

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r} on this server; list jobs with GET /v1/jobs")

    @property
    def detail(self) -> Any:
        return {"job_id": self.job_id}


class JobFinished(JobError):
    """Raised when cancelling a job that has already ended."""

    status = 409

    def __init__(self, job_id: str, state: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"job {job_id} already ended ({state}); there is nothing to cancel")

    @property
    def detail(self) -> Any:
        return {"job_id": self.job_id, "state": self.state}


class InvalidRequest(JobError):
    """Raised for a malformed body (400) or a well-formed one that is not a valid request (422)."""

    def __init__(self, message: str, *, detail: Any = None, status: int = 422) -> None:
        self.status = status
        self._detail = detail
        super().__init__(message)

    @property
    def detail(self) -> Any:
        return self._detail


class AuthRequired(JobError):
    """Raised when a request lacks the server's bearer token, or carries a wrong one."""

    status = 401

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        where = f"the server at {url}" if url else "this server"
        super().__init__(
            f"{where} requires a bearer token; send `Authorization: Bearer <token>` "
            "(keeper: set RBEE_TOKEN)"
        )


class OperationUnavailable(JobError):
    """Raised (and recorded as the job's failure) when no handler serves the operation."""

    status = 501

    def __init__(self, operation: str, *, available: list[str] | None = None) -> None:
        self.operation = operation
        self.available = available
        runs = f"it runs {', '.join(available)}" if available else "GET /openapi.json lists them"
        super().__init__(f"this server does not run operation {operation!r} yet; {runs}")

    @property
    def detail(self) -> Any:
        return {"operation": self.operation, "available": self.available}


class DaemonUnreachable(JobError):
    """Raised when a daemon (queen, hive, worker) cannot be reached at its URL."""

    status = 502

    def __init__(self, url: str, *, reason: str | None = None, message: str | None = None) -> None:
        self.url = url
        self.reason = reason
        because = f" ({reason})" if reason else ""
        super().__init__(
            message  # a server's own sentence, e.g. the queen's about the hive it forwards to
            or f"nothing answers at {url}{because}; start that daemon "
            "(e.g. `keeper queen start` / `keeper hive start`) or fix its URL"
        )

    @property
    def detail(self) -> Any:
        return {"url": self.url, "reason": self.reason}


class NotAJobServer(DaemonUnreachable):
    """Raised when the URL answers HTTP, but not as an rbee job server does (another
    program holds the port, or the URL points at the wrong thing)."""

    def __init__(self, url: str, *, reason: str) -> None:
        self.url = url
        self.reason = reason
        JobError.__init__(
            self,
            f"{url} answers, but it is not an rbee queen or hive ({reason}); "
            "fix the URL, or stop the program that holds that port",
        )


class UpstreamUnreachable(DaemonUnreachable):
    """Raised by a forwarding job when its upstream (`hive gpu1`) cannot be reached, or its
    stream vanished; a 502 for a waiting `POST /v1/jobs`, like any DaemonUnreachable."""

    def __init__(self, name: str, url: str, *, reason: str | None = None) -> None:
        self.url = url
        self.reason = reason
        self.name = name
        JobError.__init__(
            self,
            f"{name} unreachable at {url}: {reason or 'no answer'}; "
            f"check that the {name.split()[0]} is running and its URL is right",
        )


class UpstreamFailed(JobError):
    """Raised by a forwarding job when the job it forwarded to failed, was cancelled there,
    or cannot be read (e.g. it is unknown); the upstream's own error is quoted."""

    status = 502

    def __init__(self, name: str, job_id: str | None, reason: str) -> None:
        self.name = name
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"{name} job {job_id} {reason}" if job_id else f"{name} {reason}")

    @property
    def detail(self) -> Any:
        return {"upstream": self.name, "job_id": self.job_id, "reason": self.reason}


class StorageError(JobError):
    """Raised when the state folder cannot be written (disk full, I/O error). The job whose
    write failed fails with it; new jobs are refused with it until writes work again."""

    status = 507  # Insufficient Storage

    def __init__(self, folder: Path, reason: str, *, full: bool) -> None:
        self.folder = folder
        self.reason = reason
        self.full = full
        if full:
            message = (
                f"the disk holding {folder} is full; free some space there "
                "(jobs run again as soon as it has room, no restart needed)"
            )
        else:
            message = f"cannot write to {folder} ({reason}); check that disk, then try again"
        super().__init__(message)

    @property
    def detail(self) -> Any:
        return {"folder": str(self.folder), "reason": self.reason, "disk_full": self.full}

    def at_start(self) -> str:
        """The sentence for a server that this keeps from starting."""
        if self.full:
            return (
                f"the disk holding {self.folder} is full; free some space there, then start again"
            )
        return str(self)


class ServiceUnavailable(JobError):
    """Raised when a request needs the job service and it is not running (503)."""

    status = 503

    def __init__(self) -> None:
        super().__init__(
            "the job service is not running (the server is starting or stopping); "
            "try again in a moment, or restart the server"
        )


class StateFolderBusy(JobError):
    """Raised at start-up when another server already serves jobs from the same folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        super().__init__(
            f"another rbee server already uses the state folder {folder}; stop it, "
            "or give this one its own folder with RBEE_HOME"
        )


class CannotListen(JobError):
    """Raised at start-up when the server's address cannot be bound (port taken, bad address)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(
            f"cannot listen on {host}:{port} ({reason}); "
            "stop whatever holds the port or pass --port"
        )
