"""The keeper command tree (reference: docs/cli.md): the app, its root options and the
root group (`_group`); each command group registers its commands from its own module
(`_queen`, `_hive`, `_worker`, `_model`, `_infer`, `_jobs`, `_status`, `_run`).

Commands only parse arguments and hand over to `keeper.commands.*`, imported inside
each command: `keeper --help` must not pay for HTTP clients, servers or SSH.

No `from __future__ import annotations` in this package: Typer reads every command's
signature on every run, and string annotations would make it eval ~450 of them (~12 ms
per command).
"""

from typing import Annotated

import typer

from keeper.cli import _hive, _infer, _jobs, _model, _queen, _run, _status, _worker
from keeper.cli._group import KeeperGroup, hoist_root_options
from keeper.settings import KeeperSettings, check_home, check_queen_url

app = typer.Typer(
    name="keeper",
    cls=KeeperGroup,
    # Typer's Rich help formatter imports rich.markdown and markdown-it on every --help
    # (~80 ms, more than Typer itself); click's plain formatter keeps help instant.
    rich_markup_mode=None,
    help="rbee keeper: start the queen and hives, run jobs, and watch everything they "
    "narrate. Its options (--json, --no-color, --queen-url, -v) go before or after the "
    "command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Registration order is the order of `keeper --help`.
for _module in (_queen, _hive, _worker, _model, _infer, _jobs, _status, _run):
    _module.register(app)

# The settings of the running invocation, for the error handler in __main__ (-v).
current: KeeperSettings = KeeperSettings()


def _show_version(value: bool) -> None:
    """--version: eager, so it answers before anything reads RBEE_HOME or the queen."""
    if value:
        from jobs import rbee_version

        print(f"keeper {rbee_version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    json: Annotated[
        bool, typer.Option("--json", help="One JSON object per event per line.")
    ] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="Plain lines, no colours or live view.")
    ] = False,
    queen_url: Annotated[
        str | None,
        typer.Option(
            "--queen-url",
            help="Queen base URL (env RBEE_QUEEN_URL; default: the queen this RBEE_HOME "
            "started, else http://127.0.0.1:7833).",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the keeper's version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    global current
    current = KeeperSettings(verbose=verbose)  # -v holds for errors while building them
    check_home()
    current = KeeperSettings.build(
        json=json, no_color=no_color, verbose=verbose, queen_url=queen_url
    )
    ctx.obj = current
    check_queen_url(queen_url)


__all__ = ["KeeperGroup", "app", "current", "hoist_root_options", "main_options"]
