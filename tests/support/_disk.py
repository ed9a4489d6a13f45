"""Filling a disk for real, for tests of what a full disk does."""

from __future__ import annotations

from pathlib import Path


def fill_disk(folder: Path, name: str = "fill") -> Path:
    """Write `folder/name` until the disk refuses even one byte; returns its path. Name it
    as rbee would (`models/localhost/x.gguf.part`) to fill the disk with rbee's own file."""
    import errno
    import os

    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return path
