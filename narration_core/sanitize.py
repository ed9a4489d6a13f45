"""Neutralise terminal control sequences in text that came from another process.

A child or remote host can print `ESC]0;title BEL` or `ESC[2J`; passed to a terminal
they retitle the window or wipe the screen, and Rich does not strip ESC. Lines are
sanitised where they are parsed, before any renderer sees them. JSON output keeps the
raw text (JSON escapes control characters itself).
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"  # shown where a lone control character stood

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other ESC-introduced strings
# (DCS/SOS/PM/APC ... ST), two-character escapes, and 8-bit C1 forms of the same.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# The same but LF, for text of several lines.
_CONTROL_IN_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def has_control_in_lines(text: str) -> bool:
    """`has_control` for text of several lines: an LF is not one."""
    return _CONTROL_IN_LINES.search(text) is not None


def strip_control(text: str) -> str:
    """Remove escape sequences and replace other control characters (tab is kept)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(REPLACEMENT, _SEQUENCE.sub("", text))


def strip_control_lines(text: str) -> str:
    """`strip_control` for text of several lines (a batch, streamed tokens): each LF stays."""
    if _CONTROL_IN_LINES.search(text) is None:
        return text
    return "\n".join(map(strip_control, text.split("\n")))
