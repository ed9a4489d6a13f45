"""The batched SSE decoder: every frame a conforming server sends, however it is chunked."""

from __future__ import annotations

import json

from jobs import LogEntry
from jobs.client import SSEDecoder

EVENTS = [
    LogEntry.encode(1, "state", {"state": "running", "ts": 1.0}),
    LogEntry.encode(2, "narration", {"actor": "a", "action": "b", "human": "x: [y] ü €"}),
    LogEntry.encode(3, "token", {"t": "hé\n", "i": 0}),
    LogEntry.encode(4, "output", {"actor": "a", "action": "output", "human": "", "stream": "x"}),
]
STREAM = (
    b"".join(e.sse_frame() for e in EVENTS[:2])
    + b": keep-alive\n\n"
    + b"".join(e.sse_frame() for e in EVENTS[2:])
    + b"data: [ERROR] it broke: badly\n\n"
)


def _decode(chunks: list[bytes]) -> tuple[list[tuple[int, str, object]], str | None]:
    decoder = SSEDecoder()
    out = [(e.seq, e.kind, json.loads(e.data_json)) for c in chunks for e in decoder.feed(c)]
    return out, decoder.terminator


EXPECTED = [(e.seq, e.kind, json.loads(e.data_json)) for e in EVENTS]


def test_every_split_point_decodes_the_same() -> None:
    """Cutting the stream at any byte (inside UTF-8, inside `\\n\\n`) changes nothing."""
    for cut in range(1, len(STREAM)):
        assert _decode([STREAM[:cut], STREAM[cut:]]) == (EXPECTED, "[ERROR] it broke: badly")


def test_byte_by_byte() -> None:
    """A server that sends one byte per packet is decoded in full."""
    chunks = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert _decode(chunks) == (EXPECTED, "[ERROR] it broke: badly")


def test_crlf_and_general_frames() -> None:
    """CRLF endings, a field without its space, multi-line data, unknown kinds: as the spec says."""
    text = (
        b'id: 1\r\nevent: narration\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        b"id:2\nevent:token\ndata:{}\n\n"
        b"id: 3\nevent: from-the-future\ndata: {}\n\n"
        b"event: token\ndata: {}\n\n"  # no id: not resumable, so not an event
        b"data: [DONE]\n\n"
        b"id: 9\nevent: token\ndata: {}\n\n"  # after the terminator: ignored
    )
    for cut in range(1, len(text)):
        events, end = _decode([text[:cut], text[cut:]])
        assert events == [(1, "narration", {"a": 1}), (2, "token", {})], cut
        assert end == "[DONE]"


def test_plain_message_data_is_not_a_terminator() -> None:
    """Only the three end markers end a stream; other `message` data is skipped."""
    events, end = _decode([b"data: hello\n\n", EVENTS[0].sse_frame()])
    assert events == EXPECTED[:1]
    assert end is None
