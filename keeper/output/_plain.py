"""Plain lines: each event as the narration line format prints it, tokens inline.

The renderer's plain mode writes what `PlainLines.batch` returns; the state between
batches is where the cursor sits (after inline tokens, a line must end first).
"""

from __future__ import annotations

from keeper.output._items import Item, State, Token, Verbatim, state_event
from narration_core import NarrationEvent, format_line
from narration_core.sanitize import strip_control_lines


class PlainLines:
    """One renderer's plain-line text, batch by batch."""

    def __init__(self) -> None:
        self.in_tokens = False  # the cursor sits after inline tokens

    def batch(self, items: list[Item]) -> str:
        out: list[str] = []
        add = out.append
        for item in items:
            if type(item) is NarrationEvent:
                if self.in_tokens:
                    add("\n")
                    self.in_tokens = False
                add(item.human if item.stream is not None else format_line(item))
                add("\n")
            elif type(item) is Verbatim:
                if self.in_tokens:
                    add("\n")
                    self.in_tokens = False
                add(item.text)
            elif type(item) is Token:
                add(item.text)
                self.in_tokens = not item.text.endswith("\n")
            elif type(item) is State:
                if self.in_tokens:
                    add("\n")
                    self.in_tokens = False
                if item.data:
                    add(format_line(state_event(item.data)))
                    add("\n")
        text = "".join(out)
        if all(type(item) is Verbatim for item in items):
            return text  # checked free of control characters by the capture
        return strip_control_lines(text)
