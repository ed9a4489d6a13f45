"""Room on the disk, and what to say when there is none: the free-space check a job
server makes before it takes jobs, and the StorageError a failed write means for a user.
Free of the server stack, so the keeper can ask the same question about a daemon's folder.
How a job log keeps room for its final event is the server's (`jobs/server/_storage.py`).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from jobs._errors import StorageError

MIN_FREE_BYTES = 64 * 1024  # below this free space the server takes no new jobs (507)
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})  # "the disk is full" for a user
SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's words for ENOSPC


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `folder`."""
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def storage_error(folder: Path, exc: BaseException) -> StorageError:
    """The StorageError a failed write of `folder` means for a user."""
    if isinstance(exc, StorageError):
        return exc
    code = getattr(exc, "errno", None)
    # sqlite3 says "database or disk is full"; numpy's tofile (gguf) reports the short
    # write a full disk makes as "8192 requested and 272 written", with no errno.
    if code in FULL_ERRNOS or "full" in str(exc) or SHORT_WRITE.search(str(exc)):
        return StorageError(folder, "no space left", full=True)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return StorageError(folder, reason, full=False)


def check_room(folder: Path) -> StorageError | None:
    """A StorageError when the disk holding `folder` has less than MIN_FREE_BYTES free."""
    try:
        free = free_bytes(folder)
    except OSError as exc:
        return storage_error(folder, exc)
    if free < MIN_FREE_BYTES:
        return StorageError(folder, f"{free} bytes free", full=True)
    return None
