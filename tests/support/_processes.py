"""Whether processes are still running."""

from __future__ import annotations

import psutil


def all_gone(pids: list[int]) -> bool:
    """True when none of `pids` runs. An orphan zombie counts as gone: PID 1 in these
    containers does not reap, and a zombie holds nothing but its table entry."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True
