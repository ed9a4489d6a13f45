"""A terminal on StringIO, for tests that drive the keeper's live view."""

from __future__ import annotations

import io
import threading


class Screen(io.StringIO):
    """A terminal on StringIO that signals once `text` has been drawn on it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.drawn = threading.Event()

    def write(self, s: str) -> int:
        written = super().write(s)
        if self.text in self.getvalue():
            self.drawn.set()
        return written
