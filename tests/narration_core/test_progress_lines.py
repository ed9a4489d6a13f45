"""`\r` progress bars in captured output: the final state as a line, the latest as progress."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from narration_core._lines import LineSplitter

PROGRESS = b"".join(b"\r%d%%" % p for p in (20, 40, 60, 80, 100)) + b"\n"


def test_progress_line_becomes_its_final_state() -> None:
    """`\\r20%` ... `\\r100%\\n` is one line `100%`, with no CR and no replacement character."""
    assert LineSplitter().feed(b"before\n" + PROGRESS + b"after\n") == ["before", "100%", "after"]


def test_trailing_cr_and_crlf_keep_the_last_drawn_text() -> None:
    """A CR right before the newline (tqdm's last redraw, or CRLF) keeps the text it ended."""
    assert LineSplitter().feed(b"\r50%\r100%\r\n\r\r\nx\r\r\n") == ["100%", "", "x"]


def test_progress_shows_the_latest_segment_before_the_newline() -> None:
    """While a line is unfinished, `progress` is what the bar shows now; None once it ends."""
    splitter = LineSplitter()
    assert splitter.feed(b"\r20%") == [] and splitter.progress == "20%"
    assert splitter.feed(b"\r40%\r") == [] and splitter.progress == "40%"
    assert splitter.feed(b"\n") == ["40%"] and splitter.progress is None
    assert splitter.feed(b"no carriage return") == [] and splitter.progress is None


def test_endless_redraws_hold_one_segment() -> None:
    """A bar redrawn without a newline keeps only its latest state in memory."""
    splitter = LineSplitter(max_line=64)
    for percent in range(10_000):
        assert splitter.feed(b"\rstep %d" % percent) == []
    assert splitter.progress == "step 9999"
    assert splitter.flush() == ["step 9999"]


@given(chunks=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"\r")), max_size=8))
def test_split_anywhere_same_result(chunks: list[bytes]) -> None:
    """However the redraws are cut into chunks, the lines equal those of one whole feed."""
    data = b"\n".join(chunks) + b"\n"
    whole = LineSplitter(max_line=1 << 20).feed(data)
    split = LineSplitter(max_line=1 << 20)
    pieces = [line for i in range(len(data)) for line in split.feed(data[i : i + 1])]
    assert pieces == whole
    assert not any("\r" in line for line in whole)
