"""The keeper's renderers, fed through narration as the keeper feeds them."""

from __future__ import annotations

import io
import json
import threading

import pytest
from rich.console import Console

from keeper.output import Renderer
from keeper.settings import KeeperSettings
from narration_core import NarrationEvent, emit_event, format_line, narrate

HOSTILE = "\x1b]0;owned\x07title \x1b[2Jcleared [bold]not markup[/bold]"


@pytest.fixture(autouse=True)
def terminal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Live mode depends on TERM and NO_COLOR; pin them so the tests decide the mode."""
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)


def output(text: str, stream: str = "stdout") -> NarrationEvent:
    return NarrationEvent("run", "output", text, stream=stream)


@pytest.mark.parametrize("color_system", [None, "truecolor"])
def test_live_shows_lines_without_untrusted_escapes(color_system: str | None) -> None:
    """The live view prints narration and output with no escape sequence from the text."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True, color_system=color_system)
    with Renderer(KeeperSettings(), console=console) as renderer:
        assert renderer.mode == "live"
        renderer.status("Running the thing")
        narrate("queen-rbee", "start", "Queen starting on port 7833")
        emit_event(output(HOSTILE))
        narrate("keeper", "fail", "it broke", level="error")
    text = buffer.getvalue()
    assert "Queen starting on port 7833" in text and "it broke" in text
    assert "title cleared [bold]not markup[/bold]" in text
    assert "\x1b]" not in text and "\x1b[2J" not in text and "\x07" not in text


def test_live_coalesces_many_lines_into_few_writes() -> None:
    """Thousands of lines reach the live view in a handful of console writes, none lost."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True, color_system=None)
    writes = 0
    original_write = buffer.write

    def counting_write(data: str) -> int:
        nonlocal writes
        writes += 1
        return original_write(data)

    buffer.write = counting_write  # type: ignore[method-assign]
    with Renderer(KeeperSettings(), console=console):
        for i in range(5000):
            emit_event(output(f"line {i}"))
    text = buffer.getvalue()
    assert all(f"line {i}\n" in text for i in (0, 2500, 4999))
    assert writes < 100


def test_plain_prints_exact_format_lines() -> None:
    """Plain mode prints exactly format_line for narration and raw text for output."""
    out = io.StringIO()
    events = [
        NarrationEvent("queen-rbee", "start", "Queen starting"),
        NarrationEvent("llm-worker-rbee", "model_load", "a: [b] c\nd"),
    ]
    with Renderer(KeeperSettings(), file=out) as renderer:
        assert renderer.mode == "plain"
        for event in events:
            emit_event(event)
        emit_event(output("raw text"))
    expected = [format_line(e) for e in events] + ["raw text"]
    assert out.getvalue() == "".join(line + "\n" for line in expected)


def test_plain_neutralises_control_sequences() -> None:
    """Plain mode writes no ESC or BEL from untrusted text."""
    out = io.StringIO()
    with Renderer(KeeperSettings(), file=out):
        emit_event(output(HOSTILE))
        emit_event(NarrationEvent("x", "y", HOSTILE))
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert "title cleared" in out.getvalue()


def test_json_one_object_per_line_raw_text_kept() -> None:
    """JSON mode prints one parseable object per event, raw text escaped, C1 included."""
    out = io.StringIO()
    with Renderer(KeeperSettings(json=True), file=out) as renderer:
        narrate("keeper", "start", "hello", job_id="j1")
        emit_event(output(HOSTILE + "\x9b", stream="stderr"))
        renderer.job_event("token", {"t": "Hi", "i": 0})
        renderer.job_event("state", {"state": "completed", "error": None})
    text = out.getvalue()
    assert "\x1b" not in text and "\x9b" not in text
    events = [json.loads(line) for line in text.splitlines()]
    assert [e["event"] for e in events] == ["narration", "output", "token", "state"]
    assert events[0]["job_id"] == "j1"
    assert events[1]["human"] == HOSTILE + "\x9b" and events[1]["stream"] == "stderr"
    assert events[2] == {"event": "token", "t": "Hi", "i": 0}
    assert events[3]["state"] == "completed"


def test_plain_tokens_inline_then_newline() -> None:
    """Streamed tokens print inline, and the next event starts on a fresh line."""
    done = NarrationEvent("queen-rbee", "done", "ok")
    out = io.StringIO()
    with Renderer(KeeperSettings(), file=out) as renderer:
        renderer.job_event("token", {"t": "Hel", "i": 0})
        renderer.job_event("token", {"t": "lo", "i": 1})
        renderer.job_event("narration", done.to_dict())
    assert out.getvalue() == "Hello\n" + format_line(done) + "\n"


def test_sink_restored_and_threads_safe() -> None:
    """Events from several threads all arrive, in order per thread, and the sink is
    restored on exit."""
    out = io.StringIO()
    with Renderer(KeeperSettings(), file=out) as renderer:

        def emit_many(tag: int) -> None:
            for i in range(2000):
                renderer.event(output(f"{tag}:{i}"))

        threads = [threading.Thread(target=emit_many, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 8000
    for tag in range(4):
        assert [line for line in lines if line.startswith(f"{tag}:")] == [
            f"{tag}:{i}" for i in range(2000)
        ]
    after = io.StringIO()
    with Renderer(KeeperSettings(), file=after):
        pass
    narrate("keeper", "after", "not captured by a closed renderer")
    assert after.getvalue() == ""


def test_json_matches_to_dict() -> None:
    """Each JSON line holds exactly the event's to_dict fields plus its kind."""
    event = NarrationEvent(
        "hive",
        "spawn",
        'quote " and \\ and é',
        target="w1",
        job_id="j",
        trace_id="c",
        level="warn",
        fields={"n": 1},
        origin="pid 9",
    )
    raw = output("x\x00y", stream="stderr")
    out = io.StringIO()
    with Renderer(KeeperSettings(json=True), file=out) as renderer:
        renderer.event(event)
        renderer.event(raw)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {"event": "narration", **event.to_dict()}
    assert second == {"event": "output", **raw.to_dict()}
