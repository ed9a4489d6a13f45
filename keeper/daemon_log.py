"""A daemon's log file, printed by `keeper queen logs` and `keeper hive logs` (`print_log`);
the daemons library (daemons/) follows it while the daemon starts."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from narration_core import LineSplitter

FOLLOW_POLL_S = 0.2  # seconds between looks at a followed log (`logs -f`)
TAIL_CHUNK = 256 * 1024  # bytes read from the log per look


def print_log(path: Path, *, program: str, as_json: bool, follow: bool, lines: int) -> None:
    """Print the last `lines` lines of a daemon's log, sanitised (or as JSON events); with
    `follow`, keep printing what is appended, across a restart's rotation, until Ctrl-C."""
    data = path.read_bytes()
    show, flush = log_printer(program, as_json=as_json)
    for raw in data.splitlines()[-lines:] if lines > 0 else []:
        show(raw.decode("utf-8", "replace"))
    flush()
    offset = len(data)
    splitter = LineSplitter()
    while follow:  # until Ctrl-C (exit 130)
        try:
            with path.open("rb") as f:
                if os.fstat(f.fileno()).st_size < offset:  # a new start rotated the log
                    offset = 0
                f.seek(offset)
                chunk = f.read(TAIL_CHUNK)
        except FileNotFoundError:  # between the rotation and the new daemon's first line
            chunk = b""
        if chunk:
            offset += len(chunk)
            for line in splitter.feed(chunk):
                show(line)
            flush()
        else:
            time.sleep(FOLLOW_POLL_S)


def log_printer(program: str, *, as_json: bool) -> tuple[Callable[[str], None], Callable[[], None]]:
    """(show, flush) for a daemon's log lines on stdout: sanitised text, or with --json
    one event per line in the shape of every other --json output."""
    import json
    import sys

    from narration_core import NarrationEvent, parse_line, strip_control

    out = sys.stdout

    def show(line: str) -> None:
        if as_json:
            event = parse_line(line) or NarrationEvent(program, "output", line, stream="stdout")
            record = {"event": "output" if event.stream else "narration", **event.to_dict()}
            out.write(json.dumps(record) + "\n")
        else:
            out.write(strip_control(line) + "\n")

    return show, out.flush
