"""`keeper run`'s plainest command lines, read without Typer.

`keeper run` stands in for the command it runs, in scripts and CI, so its start-up is
paid on every use; Typer and the command tree are ~65 ms of it (bench/bench_run.py).
`keeper [G...] run [G | --actor A | --job J]... [--] CMD ARGS...` is read here, G being
a global flag (--json, --no-color, -v, --verbose): as in the command tree, they may
follow `run` until its command or `--`, after which everything is the command's.
Anything else (help, a typo, `--queen-url`, `=` forms) returns None and goes to Typer,
which says what is wrong with it. tests/keeper/test_run_argv.py holds both readings equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GLOBAL_FLAGS = {"--json": "json", "--no-color": "no_color", "-v": "verbose", "--verbose": "verbose"}
RUN_OPTIONS = {"--actor": "actor", "--job": "job"}


@dataclass(frozen=True)
class RunArgs:
    json: bool
    no_color: bool
    verbose: bool
    actor: str
    job: str | None
    command: list[str]


def read(argv: Sequence[str]) -> RunArgs | None:
    """The `keeper run` that `argv` (without the program name) asks for, or None."""
    flags = {"json": False, "no_color": False, "verbose": False}
    at = 0
    while at < len(argv) and argv[at] in GLOBAL_FLAGS:
        flags[GLOBAL_FLAGS[argv[at]]] = True
        at += 1
    if argv[at : at + 1] != ["run"]:
        return None
    at += 1
    options: dict[str, str | None] = {"actor": "run", "job": None}
    while at < len(argv):
        arg = argv[at]
        if arg == "--":
            at += 1
            break
        if arg in GLOBAL_FLAGS:
            flags[GLOBAL_FLAGS[arg]] = True
            at += 1
            continue
        if arg in RUN_OPTIONS:
            value = argv[at + 1] if at + 1 < len(argv) else "-"
            if value.startswith("-"):  # missing, or an option: Typer's to explain
                return None
            options[RUN_OPTIONS[arg]] = value
            at += 2
            continue
        if arg.startswith("-"):
            return None
        break  # the command: `run` reads no options after it
    command = list(argv[at:])
    actor = options["actor"]
    if not command or actor is None:
        return None
    return RunArgs(**flags, actor=actor, job=options["job"], command=command)
