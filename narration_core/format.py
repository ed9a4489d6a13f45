r"""The stdout line format `[{actor:<10}] {action:<15}: {human}` and its exact inverse.

Two readings, tried in order:
- the seed's own: `\[(.{10})\] (.{15}): (.+)` at the start of the line, actor and action
  trimmed. Every line that regex reads is read the same way (upstream actors such as
  `🐝 hive` hold an emoji and a space), and it costs a few slices, not a regex;
- any width: actors and actions longer than their pad are printed whole, so the actor
  ends at the first `]` (actors hold no bracket; inner spaces are fine) and the action at
  the first `:` after it (actions hold no whitespace or colon).
The human text may hold anything; backslash, CR and LF are escaped so every event stays
one line. A line someone else printed with backslashes in it is unescaped all the same:
the line does not say who wrote it.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Sequence

from narration_core.event import NarrationEvent

ACTOR_WIDTH = 10  # columns the actor is padded to, as the seed prints it
ACTION_WIDTH = 15  # columns the action is padded to

_ACTION = re.compile(r"[^\s:]+").fullmatch
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}
# A line's first 31 characters: a seed-width head (30) and the first of its message, so
# a line of exactly 30 characters never shares a key with longer lines under its head.
HEAD_KEY = operator.itemgetter(slice(None, 31))
_MESSAGE = operator.itemgetter(slice(30, None))  # a seed-width line's message


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


def parse_line(line: str, ts: float | None = None) -> NarrationEvent | None:
    """Read a narration line (see the module docstring); None when it is not narration.

    `line` is one line: a trailing newline (LF or CRLF) is ignored. The parsed event has
    no job and is stamped `ts`, else the time it was read, since the line carries neither.
    """
    if line[11:13] == "] " and line[28:30] == ": " and line[:1] == "[" and len(line) > 30:
        # The seed's widths, inline: nearly every line rbee prints (see split_line).
        human = line[30:]
        if human[-1] != "\n" and "\\" not in human:
            if ts is None:  # the event's own default stamps it: three arguments, not eight
                return NarrationEvent(line[1:11].strip(), line[13:28].strip(), human)
            return NarrationEvent(line[1:11].strip(), line[13:28].strip(), human, ts=ts)
    return _event(split_line(line), time.time() if ts is None else ts)


def _event(parts: tuple[str, str, str] | None, ts: float) -> NarrationEvent | None:
    if parts is None:
        return None
    return NarrationEvent(parts[0], parts[1], parts[2], None, None, None, "info", ts)


def split_line(line: str) -> tuple[str, str, str] | None:
    """`parse_line` without the event: (actor, action, message), or None."""
    if line[:1] != "[":  # most plain output is rejected here, before any slicing
        return None
    if line[-1:] == "\n":
        line = line[:-2] if line[-2:] == "\r\n" else line[:-1]
    if line[11:13] == "] " and line[28:30] == ": " and len(line) > 30:
        # The seed's widths (`.` is anything but LF, which a line does not hold).
        actor = line[1:11].strip()
        action = line[13:28].strip()
        human = line[30:]
    else:
        # Any width. Actor: up to the first "]", no brackets, no outer whitespace, padded
        # with spaces; action: no whitespace or colon. "[a] b:" (empty message, trailing
        # space trimmed by some transport) is narration too. String methods, not a
        # regex: about twice as fast.
        close = line.find("]")
        if line[close + 1 : close + 2] != " ":
            return None
        actor = line[1:close].rstrip(" ")
        if not actor or "[" in actor or actor[0].isspace() or actor[-1].isspace():
            return None
        colon = line.find(":", close + 2)
        action = line[close + 2 : colon].rstrip(" ")
        if colon < 0 or not action or not _ACTION(action):
            return None
        human = line[colon + 1 :]
        if human:
            if human[0] != " ":
                return None
            human = human[1:]
    if "\\" in human:
        human = unescape_human(human)
    return actor, action, human


def seed_heads(lines: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """The distinct heads of a batch in which every line is narration in the seed's
    widths with a message: `{line[:30]: (actor, action)}`; None when any line is not.

    For such a line `split_line` gives `(actor, action, line[30:])` with the first two
    decided by the head alone (for text without backslashes, which callers check), so a
    batch can be rewritten head by head with `str.replace` instead of line by line. The
    set of the lines' first 31 characters is built by a C loop.
    """
    heads: dict[str, tuple[str, str]] = {}
    for key in set(map(HEAD_KEY, lines)):
        if len(key) < 31 or key[:1] != "[" or key[11:13] != "] " or key[28:30] != ": ":
            return None
        head = key[:30]
        if head not in heads:
            heads[head] = (key[1:11].strip(), key[13:28].strip())  # as split_line reads them
    return heads


class SeedHeads:
    """`seed_heads` for a stream of batches, remembering the last batch's heads.

    A child narrates under a few heads, batch after batch; a batch under the same heads is
    confirmed by one `str.count` per head (a 31-character needle skips through the text)
    instead of a slice and a hash per line.
    """

    RECOUNT_UP_TO = 8  # heads: past this many, counting each costs more than the slices

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, str]] = {}

    def of(self, text: str, lines: Sequence[str]) -> dict[str, tuple[str, str]] | None:
        """`seed_heads(lines)`, where `text` is the lines each ending in LF."""
        heads = self.known(text, len(lines))
        if heads is None:
            heads = seed_heads(lines)
            if heads is not None:
                self.remember(heads)
        return heads

    def known(self, text: str, count: int) -> dict[str, tuple[str, str]] | None:
        """The remembered heads when they are the heads of each of `text`'s `count` lines
        (each ending in LF, each with a message), else None."""
        last = self._last
        if last and len(last) <= self.RECOUNT_UP_TO and self._covers(last, text, count):
            return last
        return None

    def remember(self, heads: dict[str, tuple[str, str]]) -> None:
        self._last = heads

    @staticmethod
    def _covers(heads: dict[str, tuple[str, str]], text: str, count: int) -> bool:
        """True when each of the `count` lines of `text` is one of `heads` and a message."""
        if text[:30] not in heads or text[30:31] == "\n":
            return False
        covered = 1
        for head in heads:
            if head + "\n" in text:  # a head with no message reads another way
                return False
            # Every other line starts right after an LF, and no head holds an LF: the
            # count is of distinct line starts.
            covered += text.count("\n" + head)
        return covered == count


def rewrite_heads(text: str, lines: Sequence[str], new: dict[str, str], line_end: str) -> str:
    """`text` (`lines`, each ending in LF, all seed-width narration under the heads `new`
    names) with each head replaced by `new[head]` and each LF by `line_end`, which must
    end in the only LF it holds.

    One head (a child narrating one kind of line) is one join of the messages; more are a
    `str.replace` each, right after an LF, so a message that quotes a head stays as it is.
    """
    if not lines:
        return ""
    if len(new) == 1:
        (head,) = new.values()
        return head + (line_end + head).join(map(_MESSAGE, lines)) + line_end
    out = text if line_end == "\n" else text.replace("\n", line_end)
    for head, replacement in new.items():
        out = out.replace("\n" + head, "\n" + replacement)
    return new[text[:30]] + out[30:]
