"""Token bytes into the text a stream sends: whole characters, cut at a stop string."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class StopText:
    """Token bytes into text: UTF-8 decoded across tokens (a character split over byte
    tokens comes out whole; bytes that are no UTF-8 are dropped, as llama-cpp-python's
    completions drop them) and cut at the first stop string, whose start is held back
    until the text can no longer become one."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._stop = [s for s in stop if s]
        self._held = ""

    def push(self, data: bytes) -> tuple[str, bool]:
        """The text ready to send once `data` is added, and whether a stop string ended it."""
        held = self._held + self._decoder.decode(data)
        if not self._stop:
            return held, False
        found = [i for i in (held.find(s) for s in self._stop) if i >= 0]
        if found:
            self._held = ""
            return held[: min(found)], True
        keep = max(
            (k for s in self._stop for k in range(1, len(s)) if held.endswith(s[:k])), default=0
        )
        self._held = held[len(held) - keep :]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """What was held back, once the generation ended with no stop string."""
        held, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return held
