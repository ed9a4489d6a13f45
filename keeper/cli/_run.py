"""`keeper run CMD...`: any command under narration capture."""

from typing import Annotated

import typer

from keeper.cli._common import settings_of


def register(root: typer.Typer) -> None:
    root.command("run", context_settings={"allow_interspersed_args": False})(run)


def run(
    ctx: typer.Context,
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="CMD...",
            help="The command and its arguments; put them after `--`: keeper run -- make test.",
        ),
    ],
    actor: Annotated[
        str, typer.Option(help="Actor name for the command's plain output lines.")
    ] = "run",
    job: Annotated[
        str | None,
        typer.Option(help="Tag every event with this job id (shows in --json output)."),
    ] = None,
) -> None:
    """Run any command under narration capture; exit with its exit code.

    Narration lines the command prints are shown as narration, everything else as its
    output; Ctrl-C stops the command and everything it started.
    """
    from keeper.commands import run as run_cmd

    run_cmd.run(settings_of(ctx), command, actor=actor, job_id=job)
