"""Room kept on the disk for a job log's final event. Free space and what a full disk means
for a user belong to the vocabulary (`jobs.check_room`, `jobs.storage_error`).

A job's log must always be able to take its final state event, even when the disk fills
up in the middle of the job. So before each batch the event log reserves the batch's bytes
plus FINAL_SLACK past the end of the file with `fallocate(FALLOC_FL_KEEP_SIZE)`: the file
does not grow (readers see no padding), but the blocks are the file's. When that reservation
fails, the disk is full before anything was written, and the final event still fits in
the slack the previous batch reserved. Python's os module has only `posix_fallocate`, which
grows the file, so the call goes through libc; where it is missing (not Linux) or the
filesystem refuses it, writes simply go without the guarantee.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path

FALLOC_FL_KEEP_SIZE = 0x01  # linux/falloc.h: allocate past the end without changing the size
FALLOC_FL_PUNCH_HOLE = 0x02  # linux/falloc.h: free a range (always with KEEP_SIZE)
FINAL_SLACK = 16 * 1024  # bytes kept allocated past a log's end: its final state event fits
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})  # no guarantee here

_Fallocate = Callable[[int, int, int, int], int]


def _load_fallocate() -> _Fallocate | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_fallocate = _load_fallocate()


def reserve(fd: int, offset: int, length: int) -> None:
    """Make `length` bytes from `offset` the file's own without changing its size.

    Raises OSError (ENOSPC when the disk is full); silently does nothing where the
    filesystem or the platform cannot do it.
    """
    if _fallocate is None or length <= 0:
        return
    if _fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        if code in _UNSUPPORTED:
            return
        raise OSError(code, os.strerror(code))


def release(fd: int, offset: int, length: int) -> None:
    """Give back reserved blocks past the end of a file that is complete (best effort)."""
    if _fallocate is not None and length > 0:
        _fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, offset, length)


def probe(folder: Path) -> None:
    """Write and remove a small file in `folder`; raises OSError when the disk refuses."""
    path = folder / ".write-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"\n" * 4096)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
