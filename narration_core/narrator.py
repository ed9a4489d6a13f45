"""The narration builder: `Narrator("queen").action("start").human("...").emit()`.

emit() fills the job from the context unless the builder named one, redacts, and hands
the event to the sinks. It never raises and never blocks, so it is safe anywhere.
"""

from __future__ import annotations

import re
import time
from typing import Any

from narration_core.context import _JOB_ID, _TRACE_ID
from narration_core.event import LEVELS, Level, NarrationEvent
from narration_core.redact import redact, redact_fields
from narration_core.sinks import dispatch

# Actors end at the first "]" of a line and are trimmed when read, so they hold no
# brackets, control characters or outer whitespace (inner spaces and emoji are fine:
# `🐝 llm-worker-rbee`); actions end at the first ":", so they hold no whitespace or
# colon (see format.py).
_ACTOR = re.compile(r"[^\s\[\]](?:[^\[\]\x00-\x1f\x7f-\x9f]*[^\s\[\]])?")
_ACTION = re.compile(r"[^\s:]+")
_valid_actions: set[str] = set()


def _check_action(name: str) -> str:
    if name not in _valid_actions:
        if not _ACTION.fullmatch(name):
            raise ValueError(f"narration action {name!r} must be non-empty, no spaces or ':'")
        _valid_actions.add(name)
    return name


class Narrator:
    """One per component: `NARRATE = Narrator("queen")` at module level."""

    __slots__ = ("actor",)

    def __init__(self, actor: str) -> None:
        if not _ACTOR.fullmatch(actor):
            raise ValueError(
                f"narration actor {actor!r} must be non-empty, with no brackets, control "
                "characters or leading/trailing spaces"
            )
        self.actor = actor

    def action(self, name: str) -> NarrationBuilder:
        return NarrationBuilder(self.actor, _check_action(name))

    def __repr__(self) -> str:
        return f"Narrator({self.actor!r})"


class NarrationBuilder:
    """Collects one event's parts; `emit()` sends it. Setters return the builder."""

    __slots__ = ("_action", "_actor", "_fields", "_human", "_job", "_level", "_target", "_trace")

    def __init__(self, actor: str, action: str) -> None:
        self._actor = actor
        self._action = action
        self._human = ""
        self._target: str | None = None
        self._job: str | None = None
        self._trace: str | None = None
        self._level: Level = "info"
        self._fields: dict[str, Any] | None = None

    def target(self, target: object) -> NarrationBuilder:
        self._target = str(target)
        return self

    def human(self, text: str) -> NarrationBuilder:
        self._human = text
        return self

    def job_id(self, job_id: str | None) -> NarrationBuilder:
        """Route into this job even outside its context; wins over the context."""
        self._job = job_id
        return self

    def trace_id(self, trace_id: str | None) -> NarrationBuilder:
        self._trace = trace_id
        return self

    def level(self, level: Level) -> NarrationBuilder:
        if level not in LEVELS:
            raise ValueError(f"narration level {level!r} is not one of {LEVELS}")
        self._level = level
        return self

    def field(self, key: str, value: Any) -> NarrationBuilder:
        if self._fields is None:
            self._fields = {}
        self._fields[key] = value
        return self

    def build(self) -> NarrationEvent:
        """The redacted event `emit()` would send, with the job filled from the context."""
        target = self._target
        return NarrationEvent(
            actor=self._actor,
            action=self._action,
            human=redact(self._human),
            target=None if target is None else redact(target),
            job_id=self._job if self._job is not None else _JOB_ID.get(),
            trace_id=self._trace if self._trace is not None else _TRACE_ID.get(),
            level=self._level,
            ts=time.time(),
            fields=redact_fields(self._fields) if self._fields else {},
        )

    def emit(self) -> NarrationEvent:
        event = self.build()
        dispatch(event)
        return event


def emit_event(event: NarrationEvent) -> NarrationEvent:
    """Route an event built elsewhere (a parsed child line, a relayed hop), redacted first.

    The job comes from the event, else from the context, as for the builder.
    """
    event.human = redact(event.human)
    if event.target is not None:
        event.target = redact(event.target)
    if event.fields:
        event.fields = redact_fields(event.fields)
    if event.job_id is None:
        event.job_id = _JOB_ID.get()
    if event.trace_id is None:
        event.trace_id = _TRACE_ID.get()
    dispatch(event)
    return event


def narrate(
    actor: str,
    action: str,
    human: str,
    *,
    target: str | None = None,
    job_id: str | None = None,
    level: Level = "info",
    **fields: Any,
) -> NarrationEvent:
    """One-liner form: `narrate("keeper", "stop", "Stopped queen", target="7833")`."""
    builder = Narrator(actor).action(action).human(human).level(level)
    if target is not None:
        builder.target(target)
    if job_id is not None:
        builder.job_id(job_id)
    for key, value in fields.items():
        builder.field(key, value)
    return builder.emit()
