"""Checking a model file before the hive trusts it, and hashing it so that a cancel stops it.

    checked = await check_model_file(path)      # raises ModelFileRefused (400): one sentence
    size, sha256 = await hash_model_file(checked)

A model path comes from a request, and the hive may run as root, so a path is a file only
once it is shown to be one: a regular file (not a device such as /dev/zero, a directory,
a FIFO or a socket); behind a symlink, a target the link's owner could read themselves (a
link to a root-only file such as /etc/shadow is refused even by a root hive) and that the
hive can read; the GGUF magic bytes at its start; a header whose tensors need the file's
size (no truncated file, nothing appended); every byte of it on disk (a sparse file, a hole
of 200 GB, would pin a core for minutes while it is hashed) and no larger than its disk.
These checks read only the header and take well under a second whatever the file's size.
A refusal never quotes the file's content.

Hashing reads the file in a worker thread, which looks at a stop flag before every chunk:
cancelling the job (DELETE, `keeper model delete`, SIGTERM to the hive) stops it within a
chunk instead of when the whole file is read. The file hashed is the one checked: same
device and inode, else it is refused as changed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, TypeVar

import anyio.to_thread

from hive.errors import ModelFileRefused
from hive.gguf_layout import MAGIC, LayoutError, Stopped, read_layout

CHUNK_BYTES = 1 << 20  # read per look at the stop flag: milliseconds on any disk
SPARSE_MIN_BYTES = 16 << 20  # smaller files may keep a tail in their inode (no blocks)
SPARSE_RATIO = 8  # refused when fewer than 1/8 of its bytes have blocks behind them
MAX_MODEL_BYTES = 4 << 40  # 4 TiB: twice the largest GGUF models published

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """A model file that passed the checks: where it is (links resolved) and what it is."""

    path: Path  # as given
    target: Path  # the file itself
    size: int
    device: int
    inode: int
    tensors: int


async def check_model_file(path: Path) -> CheckedFile:
    """Run every check on `path` in a thread; raises ModelFileRefused (one sentence)."""
    return await run_stoppable(partial(_check, path))


def check_model_file_blocking(path: Path) -> CheckedFile:
    """`check_model_file` in the caller's thread (a start-up pass over the catalog)."""
    return _check(path, threading.Event())


async def hash_model_file(checked: CheckedFile) -> tuple[int, str]:
    """(size, sha256) of a checked file, read in a thread that stops within a chunk of the
    caller being cancelled; raises ModelFileRefused if the file changed since its check."""
    return await run_stoppable(partial(_hash, checked))


async def run_stoppable(fn: Callable[[threading.Event], T]) -> T:
    """Run `fn(stop)` in a worker thread; on cancel, set `stop` and return at once (the
    thread sees the flag within a chunk and ends: it holds nothing the caller waits for)."""
    stop = threading.Event()
    try:
        return await anyio.to_thread.run_sync(fn, stop, abandon_on_cancel=True)
    finally:
        stop.set()


def _check(path: Path, stop: threading.Event) -> CheckedFile:
    target = _target(path)
    with _open(path, target) as f:
        st = os.fstat(f.fileno())
        try:
            head = f.read(len(MAGIC))
        except OSError as exc:
            raise ModelFileRefused(
                path, f"it could not be read ({_why(exc)})", target=target
            ) from None
        if head != MAGIC:
            raise ModelFileRefused(
                path, "it does not start with the GGUF magic bytes", target=target
            )
        _check_size(path, target, st)
        try:
            layout = read_layout(f, st.st_size, stop)
        except LayoutError as exc:
            raise ModelFileRefused(path, exc.reason, target=target) from None
        except OSError as exc:
            raise ModelFileRefused(
                path, f"it could not be read ({_why(exc)})", target=target
            ) from None
        if layout.data_end is not None:
            slack = layout.alignment
            if st.st_size < layout.data_end:
                raise ModelFileRefused(
                    path,
                    f"it is truncated: its {layout.tensors} tensors need {_bytes(layout.data_end)}"
                    f" and it holds {_bytes(st.st_size)}",
                    target=target,
                )
            if st.st_size > layout.data_end + slack:
                raise ModelFileRefused(
                    path,
                    f"it is {_bytes(st.st_size)} long while its {layout.tensors} tensors end at "
                    f"{_bytes(layout.data_end)}, so something was added to it",
                    target=target,
                )
    return CheckedFile(path, target, st.st_size, st.st_dev, st.st_ino, layout.tensors)


def _target(path: Path) -> Path:
    """The file behind `path`, once it is a regular file within reach; raises otherwise."""
    try:
        link = os.lstat(path)
    except OSError as exc:
        raise ModelFileRefused(path, f"there is no such file ({_why(exc)})") from None
    if not stat.S_ISLNK(link.st_mode):
        _check_kind(path, link, path)
        return path
    try:
        target = Path(os.path.realpath(path, strict=True))
        st = os.stat(target)
    except OSError as exc:
        raise ModelFileRefused(path, f"it is a link to nothing readable ({_why(exc)})") from None
    _check_kind(path, st, target)
    if not _reachable(link, st):
        raise ModelFileRefused(
            path, f"the link's owner (uid {link.st_uid}) may not read that file", target=target
        )
    return target


def _check_kind(path: Path, st: os.stat_result, target: Path) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISSOCK: "a socket",
    }
    kind = next((name for test, name in kinds.items() if test(st.st_mode)), "not a file")
    raise ModelFileRefused(path, f"it is {kind}, not a regular file", target=target)


def _reachable(link: os.stat_result, target: os.stat_result) -> bool:
    """Whether whoever made the link could read its target themselves: a link must not
    lend a root hive's reach to its maker (the kernel's protected_symlinks, for reading)."""
    mode = target.st_mode
    return (
        link.st_uid == 0
        or (target.st_uid == link.st_uid and bool(mode & stat.S_IRUSR))
        or (target.st_gid == link.st_gid and bool(mode & stat.S_IRGRP))
        or bool(mode & stat.S_IROTH)
    )


def _open(path: Path, target: Path) -> BinaryIO:
    """Open the checked target without following another link or blocking on a FIFO that
    replaced it meanwhile; refuses a file the hive's own user may not read."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            reason = f"the hive's user (uid {os.geteuid()}) may not read it"
        else:
            reason = f"it could not be opened ({_why(exc)})"
        raise ModelFileRefused(path, reason, target=target) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped for something else since it was looked at
        os.close(fd)
        _check_kind(path, st, target)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=CHUNK_BYTES)


def _check_size(path: Path, target: Path, st: os.stat_result) -> None:
    """Refuse a size no real model has: mostly holes (sparse), larger than its disk, or
    larger than MAX_MODEL_BYTES."""
    size, allocated = st.st_size, st.st_blocks * 512
    if size >= SPARSE_MIN_BYTES and allocated * SPARSE_RATIO < size:
        raise ModelFileRefused(
            path,
            f"it is sparse: {_bytes(size)} long with only {_bytes(allocated)} on disk, "
            "which no downloaded or converted model is",
            target=target,
        )
    disk = os.statvfs(target)
    if size > disk.f_blocks * disk.f_frsize or size > MAX_MODEL_BYTES:
        raise ModelFileRefused(
            path, f"it claims {_bytes(size)}, more than its disk holds", target=target
        )


def _hash(checked: CheckedFile, stop: threading.Event) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with _open(checked.path, checked.target) as f:
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) != (checked.device, checked.inode):
            raise ModelFileRefused(
                checked.path, "it was replaced while the hive checked it", target=checked.target
            )
        try:
            while block := f.read(CHUNK_BYTES):
                if stop.is_set():
                    raise Stopped  # the caller was cancelled and waits for nothing
                digest.update(block)
                size += len(block)
        except OSError as exc:
            raise ModelFileRefused(
                checked.path, f"it could not be read ({_why(exc)})", target=checked.target
            ) from None
    return size, digest.hexdigest()


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
