"""Where emitted events go: the stdout sink, per-job sinks and observers.

Routing, in one place:
- every event goes to the stdout sink (a line on sys.stdout unless a renderer such as
  the keeper's live view has replaced it);
- an event with a job id also goes to every sink registered for that job;
- observers (`capture_narration`) see every event;
- a batch of clean lines may skip events altogether and go to the stdout sink's
  `write_lines` when nothing else would see them (`line_batch_sink`).

A sink must not block; one that raises is reported once on stderr and skipped, so
emitting never fails whatever state the sinks are in.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from threading import Lock
from typing import Protocol

from narration_core.event import NarrationEvent
from narration_core.format import format_line

Sink = Callable[[NarrationEvent], None]

CAPTURE_ENV = "RBEE_NARRATION_CAPTURED"  # set to "1" by a capturing parent in the child's env

_job_sinks: dict[str, tuple[Sink, ...]] = {}
_observers: tuple[Sink, ...] = ()
_lock = Lock()  # guards writers only; readers see an immutable tuple, so emit takes no lock
_complained: set[int] = set()


def is_captured() -> bool:
    """True when a parent reads our stdout line by line and needs each event at once."""
    return os.environ.get(CAPTURE_ENV) == "1"


class _StdoutSink:
    """Writes the narration line to the current `sys.stdout` (looked up per event, so
    pytest's capture and redirections work). Flushes per event when captured, because a
    piped stdout is block-buffered and the parent would see nothing until we exit."""

    __slots__ = ("flush",)

    def __init__(self) -> None:
        self.flush: bool | None = None

    def __call__(self, event: NarrationEvent) -> None:
        out = sys.stdout
        if out is None:  # pythonw, or stdout closed by a daemoniser
            return
        line = event.human if event.stream is not None else format_line(event)
        out.write(line + "\n")
        if self.flush is None:
            self.flush = is_captured()
        if self.flush:
            out.flush()


_default_stdout = _StdoutSink()
_stdout_sink: Sink = _default_stdout


def set_stdout_sink(sink: Sink | None) -> Sink:
    """Replace what "stdout" means for narration (the keeper's renderer does); None restores
    the plain line writer. Returns the previous sink so a caller can put it back."""
    global _stdout_sink
    previous = _stdout_sink
    _stdout_sink = sink if sink is not None else _default_stdout
    _default_stdout.flush = None
    return previous


class LineBatchSink(Protocol):
    """A stdout sink that can take a whole batch of a process's lines at once.

    `write_lines` must show the lines exactly as it would show the events `relay_line`
    makes of them (stamped `ts`); with `lines_as_is` it may print `text` (the lines
    joined, each ending with a newline) as it stands, so it is only offered lines that
    print unchanged.
    """

    lines_as_is: bool

    def write_lines(
        self,
        text: str,
        lines: Sequence[str],
        stream: str,
        *,
        actor: str,
        origin: str | None,
        job_id: str | None,
        trace_id: str | None,
        ts: float,
    ) -> None: ...


def line_batch_sink(job_id: str | None) -> LineBatchSink | None:
    """The stdout sink, when it takes line batches and is the one sink an event of
    `job_id` would reach (no job sink, no observer); else None.

    The capture's fast path (see `narration_core._lines`) hands it clean batches without
    building an event per line.
    """
    if _observers or (job_id is not None and job_id in _job_sinks):
        return None
    sink = _stdout_sink
    return sink if hasattr(sink, "write_lines") else None  # type: ignore[return-value]


def register_job_sink(job_id: str, sink: Sink) -> Callable[[], None]:
    """Send every event of `job_id` to `sink` too; returns the function that unregisters it."""
    with _lock:
        _job_sinks[job_id] = (*_job_sinks.get(job_id, ()), sink)

    def unregister() -> None:
        with _lock:
            remaining = tuple(s for s in _job_sinks.get(job_id, ()) if s is not sink)
            if remaining:
                _job_sinks[job_id] = remaining
            else:
                _job_sinks.pop(job_id, None)

    return unregister


def add_observer(sink: Sink) -> Callable[[], None]:
    """See every event, whatever its job; returns the function that removes the observer."""
    global _observers
    with _lock:
        _observers = (*_observers, sink)

    def remove() -> None:
        global _observers
        with _lock:
            _observers = tuple(s for s in _observers if s is not sink)

    return remove


def dispatch(event: NarrationEvent) -> None:
    """Deliver an already redacted event to every sink its routing names."""
    _call(_stdout_sink, event)
    job_id = event.job_id
    if job_id is not None:
        for sink in _job_sinks.get(job_id, ()):
            _call(sink, event)
    for sink in _observers:
        _call(sink, event)


def _call(sink: Sink, event: NarrationEvent) -> None:
    try:
        sink(event)
    except Exception as exc:  # a broken sink must never break the code that narrates
        if id(sink) not in _complained:
            _complained.add(id(sink))
            # If stderr itself is gone there is nobody left to tell.
            with contextlib.suppress(Exception):
                sys.stderr.write(f"narration: sink {sink!r} failed and was skipped: {exc!r}\n")
