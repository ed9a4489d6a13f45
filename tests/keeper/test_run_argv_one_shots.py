"""`keeper status`, `keeper queen stop` and `keeper infer` read without Typer mean exactly
what Typer reads, or are left to Typer (keeper.run_argv.read_one_shot)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper import cli, run_argv
from keeper.__main__ import one_shot_command
from keeper.commands import infer as infer_cmd
from keeper.commands import queen as queen_cmd
from keeper.commands import status as status_cmd
from keeper.errors import KeeperError
from keeper.settings import KeeperSettings, check_queen_url

URL = "http://127.0.0.1:9"
GLOBALS = ("--json", "--no-color", "-v", "--verbose")
WORDS = (
    *GLOBALS, "status", "queen", "stop", "infer", "--watch", "-w", "--help", "--",
    "--queen-url", URL, "notaurl", "hi", "a b", "", "-", "-x", "--raw", "--no-autostart",
)  # fmt: skip
INFER_OPTIONS = {  # each with a value it takes
    "--model": "m", "--max-tokens": "64", "--temperature": "0.8", "--top-p": "0.95",
    "--top-k": "40", "--seed": "1", "--stop": ".", "--hive": "h", "--worker": "w",
    "--system": "",
}  # fmt: skip
VALUES = ("builtin:tiny", "0", "1", "2", "7", "0.5", "1.", ".5", "1e3", "nan", "1_0", "-1",
          "abc", "", "99999", "--json", "-v", "hi")  # fmt: skip
Call = tuple[str, Any, ...]


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Replace the three commands with recorders; returns the list they append to."""
    calls: list[Call] = []

    def status(settings: KeeperSettings) -> None:
        calls.append(("status", settings))

    def stop(settings: KeeperSettings) -> None:
        calls.append(("queen stop", settings))

    def infer(settings: KeeperSettings, operation: dict[str, Any], *, autostart: bool) -> None:
        calls.append(("infer", settings, operation, autostart))

    monkeypatch.setattr(status_cmd, "show", status)
    monkeypatch.setattr(queen_cmd, "stop", stop)
    monkeypatch.setattr(infer_cmd, "infer", infer)
    return calls


def typer_reads(argv: list[str]) -> list[Call] | str | None:
    """What the command tree calls for `argv`; the message of a keeper error it raises;
    None when it calls nothing (help, a usage error, another command)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("NO_COLOR", raising=False)
        calls = _recording(monkeypatch)
        try:
            cli.app(args=argv, prog_name="keeper", standalone_mode=False)
        except KeeperError as err:
            return str(err)
        except BaseException:  # usage errors, --help's Exit: nothing was run
            return None
    return calls or None


def quick_reads(shot: run_argv.OneShot) -> list[Call] | str:
    """What keeper.__main__ calls for `shot`, by the same steps; or its keeper error."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("NO_COLOR", raising=False)
        calls = _recording(monkeypatch)
        try:
            built = KeeperSettings.build(
                json=shot.json, no_color=shot.no_color, verbose=shot.verbose,
                queen_url=shot.queen_url,
            )  # fmt: skip
            check_queen_url(shot.queen_url)
            one_shot_command(shot, built)
        except KeeperError as err:
            return str(err)
    return calls


@st.composite
def one_shot_lines(draw: st.DrawFn) -> list[str]:
    """A one-shot command with global flags, --queen-url and (for infer) options around
    it, any part of it possibly off."""
    command = draw(st.sampled_from((["status"], ["queen", "stop"], ["infer"])))
    option = (
        st.sampled_from(sorted(INFER_OPTIONS)).flatmap(
            lambda name: st.tuples(
                st.just(name), st.sampled_from((*[INFER_OPTIONS[name]] * len(VALUES), *VALUES))
            )
        )
        | st.tuples(st.sampled_from(("--raw", "--no-autostart", "hi", "a b", *GLOBALS)))
        | st.tuples(st.just("--queen-url"), st.sampled_from((URL, "notaurl", "-v")))
    )
    before = draw(st.lists(st.sampled_from(GLOBALS), max_size=2))
    after = draw(st.lists(option, max_size=5))
    if command == ["infer"] and draw(st.booleans()):  # often whole: a model and a prompt
        after = draw(st.permutations([*after, ("--model", "builtin:tiny"), ("the queen",)]))
    return [*before, *command, *(part for option in after for part in option)]


@settings(max_examples=800, deadline=None)
@given(argv=st.lists(st.sampled_from(WORDS), max_size=6) | one_shot_lines() | one_shot_lines())
def test_a_one_shot_read_quickly_runs_what_typer_runs(argv: list[str]) -> None:
    """For any mix of global flags, commands, options and values: when the quick reader
    takes a command line, Typer calls the same command with the same settings and the
    same operation, or stops it with the same error."""
    shot = run_argv.read_one_shot(argv)
    if shot is None:
        return
    expected = typer_reads(argv)
    assert expected is not None, f"Typer runs nothing for {argv}"
    assert quick_reads(shot) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["--json", "status"],
        ["status", "--json", "--queen-url", URL],
        ["queen", "stop"],
        ["--no-color", "queen", "stop"],
        ["infer", "--model", "builtin:tiny", "hi"],
        ["--json", "infer", "--no-autostart", "--model", "builtin:tiny", "--max-tokens", "64",
         "--temperature", "0.8", "--top-p", "0.95", "--top-k", "40", "--seed", "1", "the queen"],
        ["infer", "hi", "--model", "m", "--raw", "--stop", "\n", "--stop", "."],
    ],
)  # fmt: skip
def test_everyday_one_shots_skip_typer(argv: list[str]) -> None:
    """The forms scripts and people type are read without Typer."""
    assert run_argv.read_one_shot(argv) is not None


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--help"],
        ["status", "--watch"],
        ["queen", "stop", "extra"],
        ["queen", "start"],
        ["infer", "hi"],
        ["infer", "--model", "m"],
        ["infer", "--model", "m", "--max-tokens", "0", "hi"],
        ["infer", "--model", "m", "--top-p", "0", "hi"],
        ["infer", "--model", "m", "--raw", "--system", "s", "hi"],
        ["infer", "--model=m", "hi"],
        ["--queen-url", "status"],
    ],
)
def test_help_errors_and_rarer_one_shots_go_to_typer(argv: list[str]) -> None:
    """Help, mistakes and the rarer spellings are left to Typer, which explains them."""
    assert run_argv.read_one_shot(argv) is None
