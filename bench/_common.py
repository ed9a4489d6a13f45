"""Shared bits for the bench scripts: timing medians and the run's conditions."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def conditions() -> str:
    """One line saying what the figures were measured under."""
    unbuffered = "set" if os.environ.get("PYTHONUNBUFFERED") else "unset"
    return (
        f"python {platform.python_version()}, {os.cpu_count()} cores, PYTHONUNBUFFERED {unbuffered}"
    )


def median_seconds(fn: Callable[[], None], *, repeat: int = 5) -> float:
    """Median wall time of `repeat` calls of fn, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
