"""LineSplitter and relay_line: the transport-agnostic half of capture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from narration_core import NarrationEvent, add_observer, set_stdout_sink
from narration_core._lines import LineSplitter, program_actor, relay_line


@pytest.fixture
def seen() -> Iterator[list[NarrationEvent]]:
    """Events emitted during the test, with the stdout sink silenced."""
    events: list[NarrationEvent] = []
    previous = set_stdout_sink(lambda event: None)
    remove = add_observer(events.append)
    try:
        yield events
    finally:
        remove()
        set_stdout_sink(previous)


def test_lines_split_across_chunks() -> None:
    """A line cut between two chunks comes out once, whole."""
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == ["one"]
    assert splitter.feed(b"o\nthree\n") == ["two", "three"]
    assert splitter.flush() == []


def test_crlf_and_tail() -> None:
    """CRLF endings lose the CR, and flush hands out the unterminated tail."""
    splitter = LineSplitter()
    assert splitter.feed(b"a\r\nb\r\nc\r") == ["a", "b"]
    assert splitter.flush() == ["c"]


def test_long_tail_cut_on_character_boundary() -> None:
    """Pieces of an over-long line never split a multi-byte character."""
    splitter = LineSplitter(max_line=8)
    pieces = splitter.feed("ab€€€€€".encode())  # 2 + 5 * 3 bytes, no newline
    pieces += splitter.flush()
    assert "".join(pieces) == "ab€€€€€"
    assert all("\ufffd" not in piece for piece in pieces)
    assert all(len(piece.encode()) <= 8 for piece in pieces)


def test_long_complete_line_split() -> None:
    """A finished line longer than max_line is handed out in max_line pieces."""
    splitter = LineSplitter(max_line=4)
    assert splitter.feed(b"abcdefghij\nk\n") == ["abcd", "efgh", "ij", "k"]


def test_relay_line_output_and_narration(seen: list[NarrationEvent]) -> None:
    """relay_line turns narration into narration and anything else into output."""
    relay_line("[queen-rbee] start          : up", "stdout", actor="q", origin="ssh gpu1")
    relay_line("[not narration", "stderr", actor="q", origin="ssh gpu1")
    narration, output = seen
    assert (narration.actor, narration.action, narration.origin) == (
        "queen-rbee",
        "start",
        "ssh gpu1",
    )
    assert (output.actor, output.action, output.stream) == ("q", "output", "stderr")


def test_program_actor_is_valid() -> None:
    """Program names with spaces or brackets still make a usable actor."""
    assert program_actor("/usr/bin/my tool[1]") == "my_tool_1_"
    assert program_actor("/usr/bin/python3") == "python3"


def test_private_key_over_many_lines_is_collapsed() -> None:
    """A PEM private key printed line by line never comes out; one marker line stands for it."""
    splitter = LineSplitter()
    body = b"".join(b"MIIEpAIBAAKCAQEA%02d\n" % i for i in range(30))
    chunks = [
        b"before\n-----BEGIN RSA PRIVATE KEY-----\n" + body[:100],
        body[100:] + b"-----END RSA PRIVATE KEY-----\nafter\n",
    ]
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    assert lines == ["before", "[REDACTED PRIVATE KEY]", "after"]
