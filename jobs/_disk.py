"""Room on the disk, and what to say when there is none: the free-space check a job
server makes before it takes jobs, and the StorageError a failed write means for a user
(on a full disk, DiskFull: it names the largest files rbee keeps there, so the user knows
what to delete).
Free of the server stack, so the keeper can ask the same question about a daemon's folder.
How a job log keeps room for its final event is the server's (`jobs/server/_storage.py`).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from jobs._errors import StorageError
from jobs._paths import HOME_ENV, RbeePaths

MIN_FREE_BYTES = 64 * 1024  # below this free space the server takes no new jobs (507)
NAMED_FILES = 3  # how many of the largest files a full disk's error names
SCAN_LIMIT = 5_000  # entries looked at to find them: a walk of milliseconds, even on a big home
RESERVE_NAME = "disk-reserve"  # a job server's reserve (jobs/server/_storage.py): not a culprit
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
        return DiskFull(folder, "no space left")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return StorageError(folder, reason, full=False)


def check_room(folder: Path) -> StorageError | None:
    """A StorageError when the disk holding `folder` has less than MIN_FREE_BYTES free."""
    try:
        free = free_bytes(folder)
    except OSError as exc:
        return storage_error(folder, exc)
    if free < MIN_FREE_BYTES:
        return DiskFull(folder, f"{free} bytes free")
    return None


class DiskFull(StorageError):
    """A StorageError for a full disk that also names what fills it: the largest files
    rbee keeps on that disk (models, partial downloads, logs), with their sizes, so the
    user knows what to delete without a search of their own."""

    def __init__(self, folder: Path, reason: str) -> None:
        super().__init__(folder, reason, full=True)
        self.largest = largest_files(folder)
        if self.largest:
            names = ", ".join(f"{path} ({_size(n)})" for path, n in self.largest)
            # The message is StorageError's, with the files named before its advice.
            self.args = (
                f"the disk holding {folder} is full; the largest files in rbee's folders "
                f"there are {names}; "
                "free some space there, e.g. with `keeper model delete ID` "
                "(jobs run again as soon as it has room, no restart needed)",
            )

    @property
    def detail(self) -> dict[str, object]:
        largest = [{"path": str(path), "bytes": n} for path, n in self.largest]
        return {**super().detail, "largest": largest}


def largest_files(folder: Path) -> list[tuple[Path, int]]:
    """The NAMED_FILES largest files (by the bytes they take on disk) that rbee keeps on
    the filesystem holding `folder`: all of RBEE_HOME when it is set, else the models, logs
    and state folders. Looks at no more than SCAN_LIMIT entries; never raises."""
    paths = RbeePaths.resolve()
    if os.environ.get(HOME_ENV):
        roots = [paths.models.parent]  # RBEE_HOME itself: whatever was put there counts
    else:
        roots = [paths.models, paths.logs, paths.state]
    try:
        device = os.stat(folder).st_dev
    except OSError:
        return []
    found: list[tuple[int, Path]] = []
    budget = SCAN_LIMIT
    stack = [root for root in roots if root.is_dir()]
    while stack and budget > 0:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    budget -= 1
                    if budget <= 0:
                        break
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False) and entry.name != RESERVE_NAME:
                        st = entry.stat(follow_symlinks=False)
                        if st.st_dev == device and st.st_blocks:
                            found.append((st.st_blocks * 512, Path(entry.path)))
        except OSError:  # a folder that went away or may not be read: look elsewhere
            continue
    found.sort(reverse=True)
    return [(path, n) for n, path in found[:NAMED_FILES]]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
