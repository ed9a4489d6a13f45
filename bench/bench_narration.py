"""narration_core hot paths against the stdlib, measured in the same run.

1. emit to a pipe, no job       vs logging.info through a StreamHandler (same pipe,
                                   equivalent formatter)           goal ratio <= 1.0
2. emit with one job sink       vs the same logging baseline       goal ratio <= 1.5
3. parse_line on seed-width lines vs the seed's fixed-width regex plus building the same
                                   events (equal work, lines/s)    goal ratio >= 0.8
   (and on a mix of any-width narration and plain output, for reference)

Ratios are narration cost / baseline cost for 1-2 and narration speed / baseline speed
for 3. Each round runs every variant once, in turn, so load from other processes hits
them alike; ratios are paired by round, and their median printed.
Run: python bench/bench_narration.py [--quick]
"""

from __future__ import annotations

import io
import logging
import os
import re
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(__file__))

from _common import conditions, median_seconds, quick_flag

from narration_core import (
    NarrationEvent,
    Narrator,
    format_line,
    narration_context,
    parse_line,
    register_job_sink,
)
from narration_core.sinks import set_stdout_sink

N = 10_000 if "--quick" in sys.argv else 200_000
ROUNDS = 5 if "--quick" in sys.argv else 7


def _pipe_writer() -> tuple[io.TextIOWrapper, subprocess.Popen[bytes]]:
    """A text stream onto a real pipe that another process drains, as a parent would.

    A process, not a thread: a draining thread would fight the writer for the GIL on
    every flush and inflate the flushing baseline.
    """
    drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert drain.stdin is not None
    return io.TextIOWrapper(drain.stdin, encoding="utf-8", line_buffering=False), drain


def main() -> None:
    print(f"bench_narration: N={N} events per run, {ROUNDS} interleaved rounds; {conditions()}")
    stream, drain = _pipe_writer()

    logger = logging.getLogger("bench")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(name)-10s] %(funcName)-15s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def with_logging() -> None:
        for i in range(N):
            logger.info("Queen starting on port %d", i)

    narrate = Narrator("queen")
    real_stdout = sys.stdout

    def with_narration() -> None:
        for i in range(N):
            narrate.action("start").target("7833").human(f"Queen starting on port {i}").emit()

    def with_job() -> float:
        sink_events: deque[NarrationEvent] = deque(maxlen=1024)
        unregister = register_job_sink("bench-job", sink_events.append)
        try:
            with narration_context(job_id="bench-job"):
                return _timed(with_narration)
        finally:
            unregister()

    def captured() -> float:
        os.environ["RBEE_NARRATION_CAPTURED"] = "1"
        set_stdout_sink(None)  # re-read the capture variable
        try:
            return _timed(with_narration)
        finally:
            del os.environ["RBEE_NARRATION_CAPTURED"]
            set_stdout_sink(None)

    variants: tuple[Callable[[], float], ...] = (
        lambda: _timed(with_logging),
        lambda: _timed(with_narration),
        with_job,
        captured,
    )
    sys.stdout = stream
    try:
        for variant in variants:  # warm-up
            variant()
        emits = [[variant() for variant in variants] for _ in range(ROUNDS)]
    finally:
        sys.stdout = real_stdout
        stream.close()
        drain.wait(timeout=10)

    us = 1e6 / N

    def row(label: str, figure: str, note: str = "") -> None:
        print(f"  {label:<48} {figure}  {note}")

    def emit_row(label: str, i: int, note: str) -> None:
        seconds = statistics.median(r[i] for r in emits)
        ratio = statistics.median(r[i] / r[0] for r in emits)
        row(label, f"{seconds * us:7.2f} µs/event", f"ratio {ratio:.2f} {note}")

    base = statistics.median(r[0] for r in emits)
    row("logging.info (StreamHandler, flush per record)", f"{base * us:7.2f} µs/event", "baseline")
    emit_row("emit, no job", 1, "(goal <= 1.0)")
    emit_row("emit, one job sink", 2, "(goal <= 1.5)")
    emit_row("emit, captured child (flush per event)", 3, "(flushes like logging)")

    # parse_line on a realistic mix: narration from several actors, plain output, noise.
    lines = []
    for i in range(N):
        kind = i % 4
        if kind == 0:
            lines.append(
                format_line(
                    NarrationEvent("llm-worker-rbee", "token_stream", f"token {i} [x] y: z")
                )
            )
        elif kind == 1:
            lines.append(
                format_line(NarrationEvent("queen", "start", f"Queen starting on port {i}"))
            )
        elif kind == 2:
            lines.append(f"Downloading model... {i % 100}% done")
        else:
            lines.append(f'  File "/usr/lib/python3/x.py", line {i}, in <module>')
    seed = re.compile(r"^\[(.{10})\] (.{15}): (.*)$")

    def with_regex() -> None:
        match = seed.match
        for line in lines:
            match(line)

    def with_parse() -> None:
        for line in lines:
            parse_line(line)

    def regex_events(batch: list[str]) -> None:
        match = seed.match
        for line in batch:
            m = match(line)
            if m is not None:
                a, b, h = m.groups()
                NarrationEvent(a.rstrip(), b.rstrip(), h)

    def parse_all(batch: list[str]) -> None:
        for line in batch:
            parse_line(line)

    def with_regex_and_events() -> None:
        match = seed.match
        for line in lines:
            m = match(line)
            if m is not None:
                a, b, h = m.groups()
                NarrationEvent(a.rstrip(), b.rstrip(), h)

    # Interleaved, one run of each per round, so load from other processes hits all three.
    fns = (with_regex, with_regex_and_events, with_parse)
    rounds = [[median_seconds(fn, repeat=1) for fn in fns]
              for _ in range(ROUNDS)]  # fmt: skip
    regex_s, equal_s, parse_s = (statistics.median(r[i] for r in rounds) for i in range(3))
    parse_vs_equal = statistics.median(r[1] / r[2] for r in rounds)
    row("seed fixed-width regex match", f"{N / regex_s / 1e6:7.2f} M lines/s", "baseline")
    row(
        "seed regex + building the same events",
        f"{N / equal_s / 1e6:7.2f} M lines/s",
        f"ratio {regex_s / equal_s:.2f} (equal work, fixed widths only)",
    )
    seed_width = lines[1::4]  # the queen's lines: the seed's widths, which both read
    pairs = [
        (median_seconds(lambda: regex_events(seed_width), repeat=1),
         median_seconds(lambda: parse_all(seed_width), repeat=1))
        for _ in range(ROUNDS)
    ]  # fmt: skip
    row(
        "seed-width lines: regex + the same events",
        f"{len(seed_width) / statistics.median(r for r, _ in pairs) / 1e6:7.2f} M lines/s",
        "baseline (exactly equal work)",
    )
    row(
        "seed-width lines: parse_line",
        f"{len(seed_width) / statistics.median(p for _, p in pairs) / 1e6:7.2f} M lines/s",
        f"ratio {statistics.median(r / p for r, p in pairs):.2f} (goal >= 0.8)",
    )
    row(
        "mixed lines: parse_line (any width)",
        f"{N / parse_s / 1e6:7.2f} M lines/s",
        f"ratio {parse_vs_equal:.2f} vs regex + events, not equal work: the regex skips the "
        f"long-actor quarter parse_line reads; {regex_s / parse_s:.2f} vs the bare regex",
    )


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    # The module constants above already read --quick; this parses it (and --help).
    quick_flag(__doc__, "10k events and 5 rounds instead of 200k and 7")
    main()
