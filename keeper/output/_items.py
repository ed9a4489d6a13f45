"""What the renderer queues besides narration events: tokens, job states, line batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from narration_core import NarrationEvent


class Token:
    """A streamed inference token off a job stream."""

    __slots__ = ("data", "text")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.text = str(data.get("t", ""))


class State:
    """A job's state event; an empty one only ends an unterminated token line."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


class Verbatim:
    """A clean batch of a child's lines (narration's `LineBatchSink.write_lines`): no
    control character, backslash or secret, so every output mode may print it whole."""

    __slots__ = ("actor", "job_id", "lines", "origin", "stream", "text", "trace_id", "ts")

    def __init__(
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
    ) -> None:
        self.text = text  # the lines, each with its newline; plain mode prints it as is
        self.lines = lines
        self.stream = stream
        self.actor = actor
        self.origin = origin
        self.job_id = job_id
        self.trace_id = trace_id
        self.ts = ts


class Drawn:
    """Terminal text the live view has already styled (a line batch, each line ending in
    LF): written as it is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


Item = NarrationEvent | Token | State | Verbatim | Drawn


def state_event(data: dict[str, Any]) -> NarrationEvent:
    """The narration line a job's final state is shown as."""
    state = str(data.get("state", "unknown"))
    error = data.get("error")
    human = f"job {state}: {error}" if error else f"job {state}"
    return NarrationEvent("keeper", "state", human, level="error" if error else "info")
