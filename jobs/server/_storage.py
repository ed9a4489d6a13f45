"""Room kept on the disk for a job log's final event, and for the jobs that free space
(`Reserve`, `DiskGate`). Free space and what a full disk means for a user belong to the
vocabulary (`jobs.check_room`, `jobs.storage_error`).

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
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from jobs import MIN_FREE_BYTES, Operation, StorageError, free_bytes, storage_error
from narration_core import Narrator

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


RESERVE_BYTES = 256 * 1024  # kept for the jobs that free space: a few dozen short logs
RESERVE_NAME = "disk-reserve"  # never named as what fills a disk (jobs._disk skips it)


class Reserve:
    """Room a job server keeps for the jobs a full disk must not stop (`model list`,
    `model delete`, status: `Operation.allowed_on_full_disk`).

    At 0 bytes free even their short logs and job rows cannot be written, so the server
    holds RESERVE_BYTES in a file of its own (`<state>/disk-reserve`) while the disk has
    room, and deletes it when such a job arrives on a full disk. Until the file can be put
    back (RESERVE_BYTES beyond MIN_FREE_BYTES free again) the disk counts as full for every
    other job: the room is for the way out, not for the download that filled the disk.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / RESERVE_NAME
        self.released = False  # released for a job, and not put back yet

    async def problem(self) -> StorageError | None:
        """None while the reserve is in place, is put back now, or was never released; a
        full-disk StorageError while the room it gave is still taken."""
        if self.path.exists() or await anyio.to_thread.run_sync(self.keep) or not self.released:
            return None
        return storage_error(self.path.parent, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    def keep(self) -> bool:
        """Make sure the reserve exists, if the disk has room for it; True when it does.
        Blocks (a file write): call it in a thread."""
        if self.path.exists():
            return True
        try:
            if free_bytes(self.path.parent) < RESERVE_BYTES + MIN_FREE_BYTES:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if hasattr(os, "posix_fallocate"):  # not on macOS
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)
                else:
                    os.write(fd, bytes(RESERVE_BYTES))
            finally:
                os.close(fd)
        except OSError:  # the room went meanwhile: no reserve yet, and no half of one
            self.path.unlink(missing_ok=True)
            return False
        self.released = False
        return True

    async def release(self) -> int:
        """Delete the reserve; returns the bytes it gave back (0 if there was none)."""
        try:
            size = (await anyio.Path(self.path).stat()).st_blocks * 512
            await anyio.Path(self.path).unlink()
        except FileNotFoundError:
            return 0
        self.released = True
        return size


class DiskGate:
    """Which new jobs a full disk lets in: none but those that only read or free space
    (`Operation.allowed_on_full_disk`: model list and delete, status), for which it gives
    up its Reserve, so that the way out of a full disk is never behind it."""

    def __init__(
        self,
        storage_problem: Callable[[], Awaitable[StorageError | None]],
        state_dir: Path | None,
        actor: str,
    ) -> None:
        self.storage_problem = storage_problem  # the event store's: free space, failed writes
        self.reserve = Reserve(state_dir) if state_dir is not None else None  # None: memory
        self._narrate = Narrator(actor)

    async def problem(self) -> StorageError | None:
        """Why no job may start now (what /health reports), else None."""
        problem = await self.storage_problem()
        if problem is None and self.reserve is not None:
            problem = await self.reserve.problem()
        return problem

    async def admit(self, operation: Operation) -> None:
        """Return if `operation` may start now, releasing the reserve for it on a full
        disk; raises the StorageError (507) otherwise."""
        problem = await self.problem()
        if problem is None:
            return
        if not (problem.full and operation.allowed_on_full_disk()):
            raise problem
        freed = await self.reserve.release() if self.reserve is not None else 0
        if freed:
            self._narrate.action("disk_full").level("warn").human(
                f"The disk holding {problem.folder} is full: released the {freed // 1024} KiB "
                f"kept for jobs that free space, to run {operation.operation}"
            ).emit()
