"""`keeper run` read without Typer means exactly what Typer reads, or is left to Typer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeper import cli, run_argv
from keeper.commands import run as run_cmd
from keeper.settings import KeeperSettings

TOKENS = (
    "--json", "--no-color", "-v", "--verbose", "run", "--actor", "--job", "--", "make", "test",
    "-x", "--help", "--queen-url", "http://127.0.0.1:9", "--actor=a", "a b", "", "-", "--x",
)  # fmt: skip


def typer_reads(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any] | None:
    """What the command tree hands `keeper.commands.run.run` for `argv`; None when it
    hands nothing (help, a usage error, another command)."""
    seen: dict[str, Any] = {}

    def record(
        settings: KeeperSettings, command: list[str], *, actor: str, job_id: str | None
    ) -> None:
        seen.update(settings=settings, command=list(command), actor=actor, job=job_id)

    monkeypatch.setattr(run_cmd, "run", record)
    try:
        cli.app(args=argv, prog_name="keeper", standalone_mode=False)
    except BaseException:  # usage errors, --help's Exit: nothing was run
        return None
    return seen or None


WORDS = st.sampled_from(TOKENS)


GLOBAL_FLAGS = st.sampled_from(("--json", "--no-color", "-v", "--verbose"))


@st.composite
def run_lines(draw: st.DrawFn) -> list[str]:
    """`[global flags] run [run options and global flags] [--] words`, any part of it
    possibly off."""
    flags = draw(st.lists(GLOBAL_FLAGS))
    values = st.sampled_from(("build", "a b", "", "-", "--", "-x", "run")) | WORDS
    option = st.tuples(st.sampled_from(("--actor", "--job")), values) | st.tuples(GLOBAL_FLAGS)
    options = draw(st.lists(option))
    separator = draw(st.sampled_from(([], ["--"])))
    words = draw(st.lists(st.sampled_from(("make", "-j4", "--json", "--", "run")) | WORDS))
    return [*flags, "run", *(part for option in options for part in option), *separator, *words]


@settings(max_examples=400, deadline=None)
@given(argv=st.lists(WORDS, max_size=8) | run_lines())
def test_a_command_line_read_quickly_is_read_as_typer_reads_it(argv: list[str]) -> None:
    """For any mix of global flags, run options, separators and words: when the quick
    reader takes a command line, Typer runs the same command with the same settings."""
    quick = run_argv.read(argv)
    if quick is None:
        return
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("NO_COLOR", raising=False)
        read = typer_reads(argv, monkeypatch)
    assert read is not None, f"Typer runs nothing for {argv}"
    assert read["command"] == quick.command
    assert read["actor"] == quick.actor and read["job"] == quick.job
    expected = KeeperSettings.build(
        json=quick.json, no_color=quick.no_color, verbose=quick.verbose, queen_url=None
    )
    assert read["settings"] == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--", "true"],
        ["run", "make", "test"],
        ["--json", "-v", "run", "--actor", "build", "--job", "j1", "--", "make", "-j4"],
        ["--no-color", "run", "--", "sh", "-c", "exit 3"],
        ["run", "--json", "--", "make", "--json"],
        ["run", "-v", "--actor", "build", "--no-color", "make"],
    ],
)
def test_everyday_command_lines_skip_typer(argv: list[str]) -> None:
    """The forms scripts use are read without Typer."""
    assert run_argv.read(argv) is not None


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--help"],
        ["run"],
        ["run", "--"],
        ["--queen-url", "http://127.0.0.1:9", "run", "--", "true"],
        ["run", "--actor"],
        ["run", "--actor=x", "--", "true"],
        ["run", "--jsn", "--", "true"],
        ["status"],
    ],
)
def test_help_errors_and_other_forms_go_to_typer(argv: list[str]) -> None:
    """Help, mistakes and the rarer spellings are left to Typer, which explains them."""
    assert run_argv.read(argv) is None


def _keeper(*args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1", **popen.pop("env", {})}
    return subprocess.Popen([sys.executable, "-m", "keeper", *args], text=True, env=env, **popen)


def test_a_bad_queen_url_in_the_environment_stops_a_quick_run_too() -> None:
    """`keeper run` read without Typer still refuses a bad RBEE_QUEEN_URL (exit 2), as
    the command tree does."""
    proc = _keeper(
        "run", "--", "true", env={"RBEE_QUEEN_URL": "notaurl"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "RBEE_QUEEN_URL 'notaurl' is not a URL" in err


@pytest.mark.parametrize(
    ("json", "command"),
    [(False, ["yes"]), (True, ["yes"]), (False, ["sh", "-c", "yes | cat"])],
    ids=["plain", "json", "shell-pipeline"],
)
def test_a_reader_that_closes_the_pipe_early_ends_the_command_as_a_pipeline_does(
    json: bool, command: list[str]
) -> None:
    """`keeper run -- yes | head -1`: once the reader leaves, the command's next write
    meets SIGPIPE as it would in a shell pipeline, so it ends instead of running on
    unread; keeper exits 141 like `yes` does, with no error sentence and no traceback.
    A shell reports its pipeline's SIGPIPE as exit code 141, not as a signal: as quiet."""
    flags = ["--json"] if json else []
    proc = _keeper(*flags, "run", "--", *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE
    assert "keeper:" not in err and "Traceback" not in err


def test_a_command_that_ignores_sigpipe_ends_with_its_own_code() -> None:
    """A Python command (SIGPIPE ignored) whose reader left gets EPIPE on its next write
    and exits 1, as under `| head`; keeper says how it ended, without a traceback."""
    child = "for i in range(10**9): print(f'[queen-rbee] tick           : step {i}')"
    proc = _keeper(
        "run", "--", sys.executable, "-c", child,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith("[queen-rbee] tick")
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert "exited with code 1" in err
    assert "Traceback" not in err
