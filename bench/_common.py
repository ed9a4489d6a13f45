"""Shared bits for the bench scripts: timing medians and the run's conditions."""

from __future__ import annotations

import argparse
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


def quick_flag(doc: str | None, quick_help: str) -> bool:
    """Parse the bench's command line (`--quick`, `--help`); True when --quick was given.

    Every bench_*.py takes --quick because `make bench` runs them all with it.
    """
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return bool(parser.parse_args().quick)


def median_seconds(fn: Callable[[], None], *, repeat: int = 5) -> float:
    """Median wall time of `repeat` calls of fn, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
