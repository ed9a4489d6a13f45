"""narration_core: human-readable events whose routing follows context.

    NARRATE = Narrator("queen")
    NARRATE.action("start").target("7833").human("Queen starting on port 7833").emit()

No job in context: the line goes to stdout. Inside `narration_context(job_id=...)`: to
stdout and to that job's sinks. Under a capturing parent: stdout, flushed per event.
"""

import typing

from narration_core.context import (
    clear_job_context,
    current_job_id,
    current_trace_id,
    narration_context,
    set_job_context,
)
from narration_core.event import LEVELS, Level, NarrationEvent
from narration_core.format import format_line, parse_line
from narration_core.narrator import NarrationBuilder, Narrator, emit_event, narrate
from narration_core.redact import redact
from narration_core.sanitize import strip_control
from narration_core.sinks import (
    CAPTURE_ENV,
    Sink,
    add_observer,
    is_captured,
    register_job_sink,
    set_stdout_sink,
)

if typing.TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers
    from narration_core._early import STOP_SIGNALS, EarlyChild
    from narration_core._lines import LineSplitter, relay_line, relay_lines
    from narration_core.capture import CapturedProcess, ProcessNarrationCapture
    from narration_core.proctree import STOP_GRACE_S
    from narration_core.testing import CapturedNarration, capture_narration

# Process capture pulls in anyio and psutil; programs that only narrate should not pay
# for them at import, nor for the test helpers (a dataclass built at import), so these
# names load on first use (PEP 562).
_LAZY = {
    "CapturedNarration": "narration_core.testing",
    "capture_narration": "narration_core.testing",
    "CapturedProcess": "narration_core.capture",
    "EarlyChild": "narration_core._early",
    "STOP_SIGNALS": "narration_core._early",
    "ProcessNarrationCapture": "narration_core.capture",
    "LineSplitter": "narration_core._lines",
    "relay_line": "narration_core._lines",
    "relay_lines": "narration_core._lines",
    "STOP_GRACE_S": "narration_core.proctree",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'narration_core' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CAPTURE_ENV",
    "LEVELS",
    "STOP_GRACE_S",
    "STOP_SIGNALS",
    "CapturedNarration",
    "CapturedProcess",
    "EarlyChild",
    "Level",
    "LineSplitter",
    "NarrationBuilder",
    "NarrationEvent",
    "Narrator",
    "ProcessNarrationCapture",
    "Sink",
    "add_observer",
    "capture_narration",
    "clear_job_context",
    "current_job_id",
    "current_trace_id",
    "emit_event",
    "format_line",
    "is_captured",
    "narrate",
    "narration_context",
    "parse_line",
    "redact",
    "register_job_sink",
    "relay_line",
    "relay_lines",
    "set_job_context",
    "set_stdout_sink",
    "strip_control",
]
