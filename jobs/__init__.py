"""jobs: job plumbing shared by queen and hive (registry, event log, SSE routes, client).

Kept light: the HTTP pieces (`jobs.client`, `jobs.routes`, `jobs.sse`) import httpx or
Starlette, so they are imported from their modules, not from here.
"""

from jobs.errors import (
    AuthRequired,
    DaemonUnreachable,
    InvalidRequest,
    JobError,
    JobFinished,
    JobNotFound,
    OperationUnavailable,
)
from jobs.events import FINAL_STATES, EventKind, JobEvent, JobState, terminator

__all__ = [
    "FINAL_STATES",
    "AuthRequired",
    "DaemonUnreachable",
    "EventKind",
    "InvalidRequest",
    "JobError",
    "JobEvent",
    "JobFinished",
    "JobNotFound",
    "JobState",
    "OperationUnavailable",
    "terminator",
]
