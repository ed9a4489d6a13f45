"""Plain output's fast path: clean batches are written as-is, byte for byte as events print."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from keeper.output import LiveView, Renderer, Verbatim
from keeper.settings import KeeperSettings, OutputMode
from narration_core import (
    NarrationEvent,
    add_observer,
    format_line,
    narration_context,
    parse_line,
)
from narration_core._lines import LineSplitter, relay_lines
from narration_core.redact import needs_redaction, redact
from narration_core.sinks import register_job_sink

PIECES = (
    "[", "]", " ", "  ", ":", ": ", "\\", "\\n", "a", "queen", "🐝", "\t", "\x1b[31m", "\r", "-",
    "=", "password=hunter2", "token", "Bearer abcdefgh12345678", "ghp_" + "a" * 36,
    "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "\x85", "é",
)  # fmt: skip
WORD = st.text(st.sampled_from("ab-_🐝é"), min_size=1, max_size=18)


@st.composite
def lines(draw: st.DrawFn) -> str:
    """A line a child might print: well-formed narration, narration slightly off, or noise."""
    kind = draw(st.sampled_from(("narration", "skewed", "foreign", "noise")))
    human = "".join(draw(st.lists(st.sampled_from(PIECES), max_size=6)))
    if kind == "noise":
        return human
    actor = draw(WORD | st.just("🐝 llm-worker-rbee") | st.just("queen-rbee"))
    if kind == "foreign":  # another program's line in this shape, backslashes unescaped
        return f"[{actor:<10}] {draw(WORD):<15}: {human}"
    line = format_line(NarrationEvent(actor, draw(WORD), human.replace("\r", "")))
    if kind == "skewed":  # padding lost or added, as other printers do
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from(("", " ", "  ", "\t", ":"))) + line[at + 1 :]
    return line


# Heads in the seed's widths: padded as rbee pads, padded oddly, emoji and inner spaces.
HEADS = (
    "[queen-rbee] tick           : ", "[ queen    ] tick           : ",
    "[🐝 hive    ] spawn          : ", "[a b       ] x y            : ",
    "[          ]                : ", "[run       ] output         : ",
)  # fmt: skip


@st.composite
def narrating(draw: st.DrawFn) -> str:
    """A line of a child that narrates in the seed's widths, its message quoting anything,
    heads included (a head inside a message must stay as it is)."""
    human = "".join(draw(st.lists(st.sampled_from((*PIECES, *HEADS, '"', "x")), max_size=5)))
    return draw(st.sampled_from(HEADS)) + (human or "x")


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], int]:
    """A byte stream cut into chunks anywhere (mid-line, mid-character), and a line limit;
    either any kind of line, or mostly seed-width narration (whole-batch rewrites)."""
    sep = draw(st.sampled_from(("\n", "\r\n")))
    kind = draw(st.sampled_from((lines(), narrating(), narrating() | lines())))
    text = sep.join(draw(st.lists(kind, max_size=12)))
    if draw(st.booleans()):
        text += sep  # else the last line is partial, delivered at end of stream
    data = text.encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return chunks, draw(st.sampled_from((24, 64 * 1024)))


def render(
    chunks: list[bytes],
    max_line: int,
    *,
    fast: bool,
    mode: OutputMode = "plain",
    stream: str = "stdout",
    err: io.StringIO | None = None,
) -> str:
    """What `keeper run` prints for this stream (on `err` too when given, as `keeper run`
    splits stdout and stderr); an observer forces the event path."""
    out = io.StringIO()
    with Renderer(KeeperSettings(), file=out, mode=mode, err_file=err):
        remove = (lambda: None) if fast else add_observer(lambda event: None)
        splitter = LineSplitter(max_line=max_line)
        for chunk in [*chunks, None]:
            batch = splitter.feed(chunk) if chunk is not None else splitter.flush()
            relay_lines(batch, stream, actor="run", origin="pid 1")
        remove()
    return out.getvalue()


@settings(max_examples=300, deadline=None)  # starts a renderer thread per example
@given(stream=streams(), name=st.sampled_from(("stdout", "stderr")), split=st.booleans())
def test_fast_path_prints_exactly_what_events_print(
    stream: tuple[list[bytes], int], name: str, split: bool
) -> None:
    """For any stream (redaction, key blocks, padding, partial and over-long lines, escapes,
    control characters), read from the child's stdout or stderr, the plain output is the
    same with and without the fast path, on each file when stdout and stderr are apart."""
    chunks, max_line = stream
    printed = []
    for fast in (True, False):
        err = io.StringIO() if split else None
        out = render(chunks, max_line, fast=fast, stream=name, err=err)
        printed.append((out, err.getvalue() if err is not None else None))
    assert printed[0] == printed[1]


def _without_ts(output: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in output.splitlines()]
    for event in events:
        assert isinstance(event.pop("ts"), float)
    return events


@settings(max_examples=200, deadline=None)
@given(stream=streams())
def test_json_fast_path_prints_the_same_events(stream: tuple[list[bytes], int]) -> None:
    """--json output is the same with and without the fast path, key for key and in key
    order (a batch is stamped once, so only `ts` may differ)."""
    chunks, max_line = stream
    fast = render(chunks, max_line, fast=True, mode="json")
    slow = render(chunks, max_line, fast=False, mode="json")
    assert _without_ts(fast) == _without_ts(slow)
    assert [list(e) for e in _without_ts(fast)] == [list(e) for e in _without_ts(slow)]


class _Recording(Renderer):
    """A renderer that keeps the text of every line batch it is handed whole."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verbatim: list[str] = []

    def _enqueue(self, item: Any) -> None:
        if hasattr(item, "lines"):
            self.verbatim.append(item.text)
        super()._enqueue(item)


BATCH = [
    "[queen-rbee] start          : Queen starting on port 7833",
    "[🐝 llm-worker-rbee] model_load     : loaded",
    "plain output [x] y: z",
]


def test_clean_batch_takes_the_fast_path_unless_someone_else_listens() -> None:
    """A clean batch is written whole when only the terminal sees it; a job sink, an
    observer or a secret sends it through events again."""
    out = io.StringIO()
    with _Recording(KeeperSettings(), file=out, mode="plain") as renderer:
        relay_lines(BATCH, "stdout", actor="run")
        with narration_context(job_id="j1"):
            relay_lines(BATCH, "stdout", actor="run")  # a job nobody listens to
            unregister = register_job_sink("j1", lambda event: None)
            relay_lines(BATCH, "stdout", actor="run")
            unregister()
        relay_lines(["password=hunter2", *BATCH], "stdout", actor="run")
    assert renderer.verbatim == ["\n".join(BATCH) + "\n"] * 2
    assert out.getvalue().count(BATCH[0]) == 4 and "hunter2" not in out.getvalue()


@given(pieces=st.lists(st.sampled_from([*PIECES, "x", "KEY", "Token", "AKIA"]), max_size=12))
def test_needs_redaction_is_false_only_for_text_redact_keeps(pieces: list[str]) -> None:
    """The trigger check the fast path relies on never says "clean" for text with a secret."""
    text = "".join(pieces)
    if not needs_redaction(text):
        assert redact(text) == text


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.lists(st.sampled_from([*PIECES, "x", "KEY", "Token", "AKIA", "123", "9"]), max_size=8),
        min_size=1,
        max_size=40,
    ),
    filler=st.integers(0, 3000),
)
def test_needs_redaction_on_a_long_batch_never_misses_a_secret(
    lines: list[list[str]], filler: int
) -> None:
    """On a batch long enough to be checked through its distinct lines, digits made alike,
    the trigger check still says "clean" only for text redact keeps."""
    text = "\n".join(
        ["[queen-rbee] tick           : step 1 of 2"] * (filler // 40)
        + ["".join(pieces) for pieces in lines]
    )
    if not needs_redaction(text):
        assert redact(text) == text


def test_one_secret_among_thousands_of_numbered_lines_is_found() -> None:
    """A batch of numbered lines with one secret in the middle takes the slow path."""
    lines = [f"[queen-rbee] tick           : step {i} of 3000" for i in range(3000)]
    assert not needs_redaction("\n".join(lines))
    lines[1500] = "[queen-rbee] tick           : token=8c2f41d09e7b"
    assert needs_redaction("\n".join(lines))
    assert "8c2f41d09e7b" not in redact("\n".join(lines))


@settings(max_examples=150, deadline=None)
@given(
    batch=st.lists(lines(), max_size=8) | st.lists(narrating(), min_size=1, max_size=8),
    stream=st.sampled_from(("stdout", "stderr")),
    color_system=st.sampled_from((None, "standard", "256", "truecolor")),
    no_color=st.booleans(),
)
def test_live_fast_path_draws_what_events_draw(
    batch: list[str], stream: str, color_system: str | None, no_color: bool
) -> None:
    """The live view prints a clean batch with its cached colour codes exactly as Rich
    prints the events it stands for, whatever the console's colours."""
    batch = [line for line in batch if not any(c in line for c in "\r\x1b\x85\\")]

    def drawn(items: list[Any]) -> str:
        screen = io.StringIO()
        console = Console(
            file=screen, force_terminal=True, width=60, color_system=color_system, no_color=no_color
        )
        LiveView(console).draw(items)
        return screen.getvalue()

    events = []
    for line in batch:
        event = parse_line(line)
        events.append(event or NarrationEvent("run", "output", line, stream=stream))
    fast = Verbatim(
        "".join(line + "\n" for line in batch),
        batch,
        stream,
        actor="run",
        origin=None,
        job_id=None,
        trace_id=None,
        ts=0.0,
    )
    assert drawn([fast]) == drawn(events)
