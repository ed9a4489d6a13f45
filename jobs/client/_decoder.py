"""Decoding a job's SSE stream in batches: bytes in, `LogEntry` lists out (sans-I/O).

httpx-sse parses line by line in Python and builds an object per field, which caps a
client near 150k events/s; a relay hop has to keep up with the server's ~1M. Job servers
write every event as exactly `id: N\\nevent: KIND\\ndata: JSON\\n\\n`, so the decoder
decodes each chunk once and lets one regular expression slice all of its frames in C.
When a chunk holds any other frame (a keep-alive comment, the terminator, multi-line
data, a field without its space) it is read frame by frame with the general parser of
the SSE spec instead, so nothing a conforming server sends is lost. The JSON payload is
left encoded (`LogEntry.data_json`): a relay passes it on and a reader decodes it only
when it looks inside (`LogEntry.to_event`).
"""

from __future__ import annotations

import re

from jobs import CANCELLED, DONE, ERROR, EVENT_KINDS, LogEntry

_TERMINATORS = (DONE, ERROR, CANCELLED)
# One whole frame as rbee's servers write it; `[^\n]` keeps a match inside its frame.
_FRAME = re.compile(r"id: ([0-9]+)\nevent: (" + "|".join(EVENT_KINDS) + r")\ndata: ([^\n]*)\n\n")


class SSEDecoder:
    """Feed it the chunks of one response; it returns the events they complete, in order.

    `terminator` is set (`[DONE]`, `[ERROR] …`, `[CANCELLED]`) once the end marker has
    arrived; anything after it is ignored. Comments (keep-alives) and events of a kind
    this client does not know (a newer server) are skipped.
    """

    __slots__ = ("_tail", "terminator")

    def __init__(self) -> None:
        self._tail = b""
        self.terminator: str | None = None

    def feed(self, chunk: bytes) -> list[LogEntry]:
        if self.terminator is not None:
            return []
        data = self._tail + chunk if self._tail else chunk
        if b"\r" in data:
            data = _lf_only(data)
        cut = data.rfind(b"\n\n") + 2
        if cut < 2:
            self._tail = data
            return []
        self._tail = data[cut:]
        # One decode per chunk: a blank line never falls inside a UTF-8 sequence.
        text = data[:cut].decode("utf-8", "replace")
        frames = _FRAME.findall(text)
        if len(frames) == text.count("\n\n"):  # every frame is a plain event
            return [LogEntry(int(seq), kind, payload) for seq, kind, payload in frames]
        out: list[LogEntry] = []
        for frame in text[:-2].split("\n\n"):
            entry = self._frame(frame)
            if entry is not None:
                out.append(entry)
            elif self.terminator is not None:
                self._tail = b""
                break
        return out

    def _frame(self, frame: str) -> LogEntry | None:
        """One frame read by the SSE spec: an event, or None (setting `terminator` if so)."""
        seq: str | None = None
        kind = "message"
        data: list[str] = []
        for line in frame.split("\n"):
            if not line or line[0] == ":":
                continue
            name, sep, value = line.partition(":")
            if sep and value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                kind = value
            elif name == "id":
                seq = value
        if not data:
            return None
        payload = "\n".join(data)
        if kind == "message" and payload.startswith(_TERMINATORS):
            self.terminator = payload
        elif kind in EVENT_KINDS and seq is not None and seq.isdigit():
            return LogEntry(int(seq), kind, payload)
        return None


def _lf_only(data: bytes) -> bytes:
    """CRLF and lone CR line ends as LF; a CR at the very end waits for a possible LF."""
    held = data.endswith(b"\r")
    if held:
        data = data[:-1]
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data + b"\r" if held else data
