"""The job event model: what a job's stream carries, and the job states.

An event is `(seq, kind, data)`. `seq` counts from 1 per job with no gaps, so a reader
that remembers the last seq it saw can resume exactly where it stopped. A narration or
output event read back from a stream is the NarrationEvent it carries (`to_narration`),
which is what the keeper renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

from narration_core.event import NarrationEvent
from narration_core.sanitize import strip_control

EventKind = Literal["narration", "token", "output", "state"]
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)

JobState = Literal["queued", "running", "completed", "failed", "cancelled"]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
FINAL_STATES: frozenset[JobState] = frozenset({"completed", "failed", "cancelled"})

# SSE terminator lines, one per final state; [ERROR] is followed by the error text.
DONE = "[DONE]"
ERROR = "[ERROR]"
CANCELLED = "[CANCELLED]"
_NARRATION_KINDS = ("narration", "output")  # kinds whose data is a NarrationEvent record


def is_final(state: str) -> bool:
    return state in FINAL_STATES


def terminator(state: JobState, error: str | None = None) -> str:
    """The `data:` payload that ends a stream of a job in the final `state`."""
    if state == "completed":
        return DONE
    if state == "cancelled":
        return CANCELLED
    # One line, whatever the error held, and no control sequences for a terminal to obey.
    text = strip_control(" ".join((error or "the job failed").split()))
    return f"{ERROR} {text}"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a job's stream, as a client sees it.

    `data` by kind: narration/output -> `NarrationEvent.to_dict()`; token -> `{"t", "i"}`;
    state -> `{"state", "ts", "error"?, "result"?}`.
    """

    seq: int
    kind: EventKind
    data: Any

    @property
    def state(self) -> JobState | None:
        """The job state a `state` event announces; None for other kinds."""
        return self.data.get("state") if self.kind == "state" else None

    @property
    def is_final(self) -> bool:
        return self.kind == "state" and is_final(self.data.get("state", ""))


class LogEntry:
    """An event as the server keeps it: the data is JSON-encoded once, at append time, so
    fan-out to many subscribers and the JSONL write never re-encode it."""

    __slots__ = ("_frame", "data_json", "kind", "seq")

    def __init__(self, seq: int, kind: EventKind, data_json: str) -> None:
        self.seq = seq
        self.kind = kind
        self.data_json = data_json
        self._frame: bytes | None = None

    @classmethod
    def encode(cls, seq: int, kind: EventKind, data: Any) -> LogEntry:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        return cls(seq, kind, text)

    def sse_frame(self) -> bytes:
        """`id:`/`event:`/`data:` lines plus the blank line; cached (racing caches agree)."""
        frame = self._frame
        if frame is None:
            frame = f"id: {self.seq}\nevent: {self.kind}\ndata: {self.data_json}\n\n".encode()
            self._frame = frame
        return frame

    def jsonl(self) -> str:
        # Field order is fixed so `parse_jsonl` can slice without a full JSON parse.
        return f'{{"seq":{self.seq},"kind":"{self.kind}","data":{self.data_json}}}\n'

    def to_event(self) -> JobEvent:
        return JobEvent(self.seq, self.kind, json.loads(self.data_json))


_PREFIX = '{"seq":'
_KIND = ',"kind":"'
_DATA = '","data":'


def parse_jsonl(line: str) -> LogEntry | None:
    """The entry a `LogEntry.jsonl()` line holds; None for a torn or foreign line (a crash can
    leave half a line at the end of a file)."""
    if not line.startswith(_PREFIX) or not line.endswith("}"):
        return None
    try:
        k = line.index(_KIND, len(_PREFIX))
        d = line.index(_DATA, k)
        seq = int(line[len(_PREFIX) : k])
    except ValueError:
        return None
    kind = line[k + len(_KIND) : d]
    if kind not in EVENT_KINDS:
        return None
    return LogEntry(seq, kind, line[d + len(_DATA) : -1])


# One whole `LogEntry.jsonl()` line; `.` stops at a newline, so a torn line never matches.
_LINE = re.compile(
    r'^\{"seq":([0-9]+),"kind":"(' + "|".join(EVENT_KINDS) + r')","data":(.*)\}$', re.M
)


def iter_jsonl(text: str) -> Iterator[LogEntry]:
    """Every entry in a chunk of whole lines, as `parse_jsonl` reads each (one regex scan over
    the chunk: replay from disk is ~1.5x faster than splitting and parsing line by line)."""
    for match in _LINE.finditer(text):
        yield LogEntry(int(match[1]), match[2], match[3])  # type: ignore[arg-type]


def to_narration(kind: str, data: Any) -> NarrationEvent:
    """A non-token, non-state job stream event as the NarrationEvent it stands for.

    `narration` and `output` events rebuild their record; a malformed record or an event
    of a kind this version does not know becomes an output line holding its JSON, so it
    is shown rather than dropped.
    """
    if kind in _NARRATION_KINDS:
        try:
            return NarrationEvent.from_dict(data)
        except ValueError:
            return NarrationEvent("keeper", "output", json.dumps(data), stream="stdout")
    return NarrationEvent("keeper", kind, json.dumps(data, default=str), stream="stdout")
