"""Test helpers for any package: see exactly what was narrated."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from narration_core.event import NarrationEvent
from narration_core.sinks import add_observer


@dataclass
class CapturedNarration:
    """Events seen while `capture_narration()` was active, in emit order, after redaction."""

    events: list[NarrationEvent] = field(default_factory=list)

    def actions(self) -> list[str]:
        return [e.action for e in self.events]

    def humans(self) -> list[str]:
        return [e.human for e in self.events]


@contextmanager
def capture_narration() -> Iterator[CapturedNarration]:
    """Record every event emitted anywhere in the process while the block runs."""
    captured = CapturedNarration()
    remove = add_observer(captured.events.append)
    try:
        yield captured
    finally:
        remove()
