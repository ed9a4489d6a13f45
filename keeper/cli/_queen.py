"""`keeper queen start|stop|status|logs`."""

from typing import Annotated

import typer

from keeper.cli._common import settings_of

app = typer.Typer(help="Start, stop and watch the queen (the job server).", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="queen")


@app.command("start")
def queen_start(
    ctx: typer.Context,
    port: Annotated[
        int | None,
        typer.Option(help="Port the queen listens on (default 7833, or where it already runs)."),
    ] = None,
    bind: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs a token.")
    ] = "127.0.0.1",
    token: Annotated[
        str | None,
        typer.Option(help="Bearer token the queen requires (env RBEE_TOKEN).", envvar="RBEE_TOKEN"),
    ] = None,
    foreground: Annotated[
        bool,
        typer.Option("--foreground", help="Stay attached and stream until Ctrl-C, then stop it."),
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the queen to become healthy.")
    ] = 30.0,
) -> None:
    """Start queen-rbee, show its startup narration, and leave it running once healthy."""
    from keeper.commands import queen

    queen.start(
        settings_of(ctx), port=port, bind=bind, token=token, foreground=foreground, timeout=timeout
    )


@app.command("stop")
def queen_stop(ctx: typer.Context) -> None:
    """Stop the queen: SIGTERM, then SIGKILL if it has not exited after the grace period."""
    from keeper.commands import queen

    queen.stop(settings_of(ctx))


@app.command("status")
def queen_status(ctx: typer.Context) -> None:
    """Is the queen running? Its pid, port, uptime and version.

    With --json: one `queen` JSON object, for scripts.
    """
    from keeper.commands import queen

    queen.status(settings_of(ctx))


@app.command("logs")
def queen_logs(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        int, typer.Option("-n", "--lines", help="How many last lines to show.", min=0)
    ] = 50,
) -> None:
    """Show the queen's log file (its stdout and stderr since the last start)."""
    from keeper.commands import queen

    queen.logs(settings_of(ctx), follow=follow, lines=lines)
