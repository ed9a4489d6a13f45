"""The stdout line format `[{actor:<10}] {action:<15}: {human}` and its exact inverse.

Actors and actions longer than their pad are printed whole, so `parse_line` never
assumes fixed widths: the actor ends at the first `]` (actors cannot hold one), the
action at the first `: ` after it (actions hold no space or colon). The human text may
hold anything; backslash, CR and LF are escaped so every event stays one line.
"""

from __future__ import annotations

import re

from narration_core.event import NarrationEvent

ACTOR_WIDTH = 10  # columns the actor is padded to, as the seed prints it
ACTION_WIDTH = 15  # columns the action is padded to

_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}


def escape_human(human: str) -> str:
    """Make a message one line, reversibly (`unescape_human` restores it)."""
    if "\\" in human or "\n" in human or "\r" in human:
        return human.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return human


def unescape_human(text: str) -> str:
    if "\\" not in text:
        return text
    return _UNESCAPE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(0)), text)


def format_line(event: NarrationEvent) -> str:
    """The one stdout line for an event, without the trailing newline."""
    return f"[{event.actor:<10}] {event.action:<15}: {escape_human(event.human)}"


def parse_line(line: str) -> NarrationEvent | None:
    """Read a line printed by `format_line`; None when it is not narration.

    A trailing newline (LF or CRLF) is ignored. Plain output must never be mistaken
    for narration needlessly, so the actor and action are checked for whitespace.
    """
    if not line or line[0] != "[":
        return None
    if line[-1] == "\n":
        line = line[:-2] if line.endswith("\r\n") else line[:-1]
    close = line.find("] ", 1)
    if close < 0:
        return None
    actor = line[1:close].rstrip(" ")
    if not actor or " " in actor or "[" in actor or "\t" in actor:
        return None
    start = close + 2
    sep = line.find(": ", start)
    if sep < 0:
        # "[a] b:" is an event with an empty message whose trailing space was trimmed.
        if not line.endswith(":"):
            return None
        sep = len(line) - 1
    action = line[start:sep].rstrip(" ")
    if not action or " " in action or "\t" in action or ":" in action:
        return None
    return NarrationEvent(actor=actor, action=action, human=unescape_human(line[sep + 2 :]))
