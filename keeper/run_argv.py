"""The plainest command lines of the commands paid per use, read without Typer.

`keeper run` stands in for the command it runs, in scripts and CI, so its start-up is
paid on every use; Typer and the command tree are ~65 ms of it (bench/bench_run.py).
`keeper [G...] run [G | --actor A | --job J]... [--] CMD ARGS...` is read here, G being
a global flag (--json, --no-color, -v, --verbose): as in the command tree, they may
follow `run` until its command or `--`, after which everything is the command's.
Anything else (help, a typo, `--queen-url`, `=` forms) returns None and goes to Typer,
which says what is wrong with it. tests/keeper/test_run_argv.py holds both readings equal.

`keeper status`, `keeper queen stop` and `keeper infer` are read the same way
(`read_one_shot`, with `--queen-url URL` too): a script polls the first, and every prompt
pays the last's start-up before its first token. tests/keeper/test_run_argv_one_shots.py
holds those readings equal to Typer's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

GLOBAL_FLAGS = {"--json": "json", "--no-color": "no_color", "-v": "verbose", "--verbose": "verbose"}
RUN_OPTIONS = {"--actor": "actor", "--job": "job"}


class RunArgs(NamedTuple):
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


# The one-shot commands paid on every use (a script polling `keeper status`, a prompt per
# `keeper infer`): read here too, so Typer, the command tree and its dispatch (~1x the
# cost of `import typer`, bench/bench_keeper.py) are spared. Only their plainest forms;
# anything else, `--help` and every mistake included, is Typer's to read and explain.
ONE_SHOTS = {("status",): "status", ("queen", "stop"): "queen stop", ("infer",): "infer"}
QUEEN_URL = "--queen-url"
INFER_TEXT = {
    "--model": "model",
    "--hive": "hive",
    "--worker": "worker",
    "--system": "system",
}
INFER_INTS = {"--max-tokens": "max_tokens", "--top-k": "top_k", "--seed": "seed"}
INFER_FLOATS = {"--temperature": "temperature", "--top-p": "top_p"}
INFER_FLAGS = {"--raw": "raw", "--no-autostart": "no_autostart"}
INFER_VALUED = {*INFER_TEXT, *INFER_INTS, *INFER_FLOATS, "--stop"}


class OneShot(NamedTuple):
    json: bool
    no_color: bool
    verbose: bool
    queen_url: str | None
    command: str  # a value of ONE_SHOTS
    options: dict[str, Any]  # infer's: the keywords of keeper.commands.infer.operation


def read_one_shot(argv: Sequence[str]) -> OneShot | None:
    """The `keeper status`, `keeper queen stop` or `keeper infer` that `argv` asks for, or
    None. Global flags and --queen-url may stand before or after the command, as in the
    command tree; an option written twice, with `=`, or a value that looks like an option
    goes to Typer."""
    flags = {"json": False, "no_color": False, "verbose": False}
    queen_url: str | None = None
    words: list[str] = []
    at = 0
    while at < len(argv):
        arg = argv[at]
        if arg in GLOBAL_FLAGS:
            flags[GLOBAL_FLAGS[arg]] = True
            at += 1
            continue
        takes_value = arg == QUEEN_URL or (words[:1] == ["infer"] and arg in INFER_VALUED)
        if not takes_value:
            words.append(arg)
            at += 1
            continue
        if at + 1 >= len(argv) or argv[at + 1].startswith("-"):
            return None  # a value missing, or an option where it should be: Typer explains
        if arg != QUEEN_URL:
            words += argv[at : at + 2]  # the option's value is its own, whatever it says
        elif queen_url is None:
            queen_url = argv[at + 1]
        else:
            return None
        at += 2
    command = next((c for names, c in ONE_SHOTS.items() if words[: len(names)] == [*names]), None)
    if command is None:
        return None
    rest = words[len(command.split()) :]
    options: dict[str, Any] = {}
    if command == "infer":
        read = _infer_options(rest)
        if read is None:
            return None
        options = read
    elif rest:
        return None  # an option of the command (`--watch`), an extra word, a typo
    return OneShot(**flags, queen_url=queen_url, command=command, options=options)


def _infer_options(words: list[str]) -> dict[str, Any] | None:
    """`keeper infer`'s words (globals taken out) as keywords, with Typer's checks; None
    for anything Typer would refuse, explain or read otherwise."""
    from jobs import MAX_TOKENS_LIMIT, TEMPERATURE_MAX, TOP_K_MIN, TOP_P_MAX

    options: dict[str, Any] = {"stop": []}
    prompts: list[str] = []
    at = 0
    while at < len(words):
        arg = words[at]
        if not arg.startswith("-"):
            prompts.append(arg)
            at += 1
            continue
        if arg in INFER_FLAGS:
            if INFER_FLAGS[arg] in options:
                return None
            options[INFER_FLAGS[arg]] = True
            at += 1
            continue
        value = words[at + 1] if at + 1 < len(words) else "-"
        if value.startswith("-"):  # missing, or an option: Typer's to explain
            return None
        at += 2
        if arg == "--stop":
            options["stop"].append(value)
            continue
        name = INFER_TEXT.get(arg) or INFER_INTS.get(arg) or INFER_FLOATS.get(arg)
        if name is None or name in options:
            return None  # not an option of infer (`--help`), or given twice
        number: int | float | None = None
        if arg in INFER_INTS:
            number = int(value) if value.isascii() and value.isdigit() else None
        elif arg in INFER_FLOATS:
            whole, _, part = value.partition(".")
            digits = whole + part
            number = float(value) if digits.isascii() and digits.isdigit() else None
        if arg in INFER_TEXT:
            options[name] = value
        elif number is None:
            return None
        else:
            options[name] = number
    limits = (
        ("max_tokens", 1, MAX_TOKENS_LIMIT),
        ("temperature", 0, TEMPERATURE_MAX),
        ("top_k", TOP_K_MIN, None),
    )
    for name, low, high in limits:
        number = options.get(name)
        if number is not None and (number < low or (high is not None and number > high)):
            return None
    top_p = options.get("top_p")
    raw = options.pop("raw", False)
    if len(prompts) != 1 or "model" not in options or (raw and "system" in options):
        return None
    if top_p is not None and not 0 < top_p <= TOP_P_MAX:
        return None
    return {**options, "prompt": prompts[0], "raw": raw}
