"""The stdout line format and its parser."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from narration_core import NarrationEvent, Narrator, format_line, parse_line
from narration_core.format import SeedHeads, seed_heads, unescape_human

ACTOR = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="[]"),
    min_size=1,
    max_size=30,
).filter(lambda s: s.split() == [s])  # no whitespace of any kind
ACTION = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=":"),
    min_size=1,
    max_size=30,
).filter(lambda s: s.split() == [s])
HUMAN = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


def test_format_matches_the_seed_layout() -> None:
    """Short actors and actions are padded to 10 and 15 columns, as the seed prints them."""
    event = NarrationEvent(actor="queen", action="start", human="Queen starting on port 7833")
    assert format_line(event) == "[queen     ] start          : Queen starting on port 7833"


def test_long_actor_and_action_are_printed_whole() -> None:
    """Nothing is truncated: an actor over 10 and an action over 15 characters stay whole."""
    event = NarrationEvent(actor="llm-worker-rbee", action="model_load_complete", human="y")
    assert format_line(event) == "[llm-worker-rbee] model_load_complete: y"


@pytest.mark.parametrize(
    ("line", "actor", "action", "human"),
    [
        ("[queen-rbee] start          : x", "queen-rbee", "start", "x"),
        ("[llm-worker-rbee] model_load: y", "llm-worker-rbee", "model_load", "y"),
        ("[hive      ] spawn          : [a] b: c", "hive", "spawn", "[a] b: c"),
        ("[keeper    ] note           : a ] b : c", "keeper", "note", "a ] b : c"),
        ("[keeper    ] empty          : ", "keeper", "empty", ""),
        ("[keeper    ] empty          :", "keeper", "empty", ""),
        ("[keeper    ] crlf           : windows\r\n", "keeper", "crlf", "windows"),
        # Upstream actors: an emoji and inner spaces, in seed widths or longer.
        ("[🐝 hive    ] start          : x", "🐝 hive", "start", "x"),
        ("[🐝 hive   ] start          : x", "🐝 hive", "start", "x"),  # as issue 7 typed it
        ("[a b c     ] act ion        : y", "a b c", "act ion", "y"),
        ("[🐝 llm-worker-rbee] model_load: y", "🐝 llm-worker-rbee", "model_load", "y"),
        ("[ queen    ] a:b            : [x] y: z", "queen", "a:b", "[x] y: z"),
    ],
)
def test_parse_reads_lines_of_any_width(line: str, actor: str, action: str, human: str) -> None:
    """The parser finds actor, action and message without assuming fixed widths."""
    event = parse_line(line)
    assert event is not None
    assert (event.actor, event.action, event.human) == (actor, action, human)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "plain output",
        "Traceback (most recent call last):",
        "[2026-11-22 10:00] INFO started: yes",
        "[ ] x: y",
        "[a] : y",
        "[a]b: y",
        "[a] b c: y",
        "[unterminated actor x: y",
    ],
)
def test_non_narration_lines_are_not_parsed(line: str) -> None:
    """Lines that are not in the narration format come back as None (plain output)."""
    assert parse_line(line) is None


def test_newlines_and_backslashes_are_escaped_onto_one_line() -> None:
    """A multi-line message prints as one line and parses back to the original text."""
    human = "first\nsecond\r\nC:\\temp\\new"
    line = format_line(NarrationEvent(actor="a", action="b", human=human))
    assert "\n" not in line and "\r" not in line
    parsed = parse_line(line)
    assert parsed is not None and parsed.human == human


@given(actor=ACTOR, action=ACTION, human=HUMAN)
def test_round_trip(actor: str, action: str, human: str) -> None:
    """parse_line(format_line(e)) restores actor, action and message for every event."""
    line = format_line(NarrationEvent(actor=actor, action=action, human=human))
    parsed = parse_line(line)
    assert parsed is not None
    assert (parsed.actor, parsed.action, parsed.human) == (actor, action, human)
    assert parse_line(line + "\n") is not None


def test_json_form_round_trips() -> None:
    """The JSON form used on job streams carries every field and reads back identically."""
    event = NarrationEvent(
        actor="queen",
        action="listen",
        human="ok",
        target="7833",
        job_id="job-1",
        trace_id="c-1",
        level="warn",
        fields={"port": 7833},
        origin="pid 12",
    )
    assert NarrationEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    "bad",
    [
        '{"actor": "a"}',
        "[1, 2]",
        "not json",
        '{"actor":"a","action":"b","human":"c","level":"loud"}',
    ],
)
def test_malformed_json_records_raise_value_error(bad: str) -> None:
    """A record that is not a narration event is refused with ValueError, not a crash."""
    with pytest.raises(ValueError):
        NarrationEvent.from_json(bad)


SEED = re.compile(r"\[(.{10})\] (.{15}): (.+)")  # the seed's own parser (Rust `captures`)
# Characters a line is made of: brackets, colons, spaces, padding and emoji are the
# interesting ones; LF never occurs inside a line.
LINE_CHAR = st.one_of(
    st.sampled_from("[]: \\abn\t🐝\u3000\r"),
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),
)


@st.composite
def seed_width_lines(draw: st.DrawFn) -> str:
    """Lines the seed's regex matches: exact widths, anything inside them."""
    actor = draw(st.text(LINE_CHAR, min_size=10, max_size=10))
    action = draw(st.text(LINE_CHAR, min_size=15, max_size=15))
    human = draw(st.text(LINE_CHAR, min_size=1, max_size=40))
    return f"[{actor}] {action}: {human}"


@given(line=st.one_of(seed_width_lines(), st.text(LINE_CHAR, max_size=60)))
def test_parser_reads_every_line_the_seed_regex_reads(line: str) -> None:
    """Whatever the seed's fixed-width regex reads at the start of a line parses to the
    same trimmed actor and action and the same (unescaped) message."""
    match = SEED.match(line)
    if match is None:
        return
    parsed = parse_line(line)
    assert parsed is not None, line
    actor, action, human = match.groups()
    assert (parsed.actor, parsed.action) == (actor.strip(), action.strip())
    assert parsed.human == unescape_human(human)


SPACED_ACTOR = st.text(
    alphabet=st.one_of(
        st.sampled_from(" 🐝"),
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="[]"),
    ),
    min_size=1,
    max_size=30,
).filter(lambda s: s.strip() == s and s != "")


@given(actor=SPACED_ACTOR, action=ACTION, human=HUMAN)
def test_narrator_actor_with_spaces_and_emoji_round_trips(
    actor: str, action: str, human: str
) -> None:
    """A Narrator actor may hold inner spaces and emoji, and its lines parse back to it."""
    event = Narrator(actor).action(action).human(human).build()
    parsed = parse_line(format_line(event))
    assert parsed is not None
    assert (parsed.actor, parsed.action, parsed.human) == (actor, action, event.human)


@pytest.mark.parametrize("actor", ["", " queen", "queen ", "a]b", "a[b", "a\tb", "a\nb", "a\x1bb"])
def test_narrator_refuses_actors_that_cannot_round_trip(actor: str) -> None:
    """Actors with brackets, control characters or outer whitespace are refused at once."""
    with pytest.raises(ValueError):
        Narrator(actor)


SEED_HEADS = (
    "[queen-rbee] tick           : ",
    "[a]       ] x              : ",
    "[run       ] y   :          : ",
)


@settings(max_examples=300)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(SEED_HEADS),
                st.lists(st.sampled_from(["x", " ", "\n", *SEED_HEADS]), max_size=3).map("".join),
            ).map("".join)
            | st.sampled_from(["plain", "[x] y: z", "[queen-rbee] tick"]),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_seed_heads_of_a_stream_says_what_each_batch_says(batches: list[list[str]]) -> None:
    """Remembering the last batch's heads never changes the verdict on the next batch: a
    batch is all seed-width narration with messages exactly when `seed_heads` says so, and
    then every head it holds is named with the same actor and action."""
    seen = SeedHeads()
    for raw in batches:
        lines = "\n".join(raw).split("\n")  # a message cannot hold an LF
        fresh = seed_heads(lines)
        remembered = seen.of("".join(line + "\n" for line in lines), lines)
        if fresh is None:
            assert remembered is None
        else:
            assert remembered is not None and fresh.items() <= remembered.items()
