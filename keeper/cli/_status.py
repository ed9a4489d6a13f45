"""`keeper status` and `keeper ui`: the queen's state, as tables or its dashboard."""

from typing import Annotated

import typer

from keeper.cli._common import settings_of


def register(root: typer.Typer) -> None:
    root.command("status")(status)
    root.command("ui")(ui)


def status(
    ctx: typer.Context,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Keep showing fresh status until Ctrl-C.")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between updates with --watch.")] = 2.0,
) -> None:
    """The queen, its hives (last beat, stale) and their workers as tables.

    With --json: one JSON line holding the snapshot as `result`, for scripts. Looking
    creates no job on the queen; --watch follows a status watch job until Ctrl-C.
    """
    if not watch:
        from keeper.commands import status as status_cmd

        status_cmd.show(settings_of(ctx))
        return
    from keeper.commands import queen

    queen.overview(settings_of(ctx), watch=watch, interval=interval)


def ui(
    ctx: typer.Context,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Print the address without opening a browser.")
    ] = False,
    port: Annotated[
        int | None,
        typer.Option(help="Port for a queen started here when none runs (default 7833)."),
    ] = None,
) -> None:
    """Open the queen's web dashboard in your browser; start a local queen first if none runs."""
    from keeper.commands import ui as ui_cmd

    url_given = ctx.find_root().params.get("queen_url") is not None
    ui_cmd.open_dashboard(
        settings_of(ctx), open_browser=not no_open, port=port, url_given=url_given
    )
