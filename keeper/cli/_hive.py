"""`keeper hive start|stop|status|logs|list|install`."""

from typing import Annotated

import typer

from keeper.cli._common import settings_of

app = typer.Typer(help="Start, stop and list hives (one daemon per machine).", no_args_is_help=True)

AcceptNewHostKey = Annotated[
    bool,
    typer.Option(
        "--accept-new-host-key",
        help="Trust a remote host not yet in known_hosts and store its key (never a changed one).",
    ),
]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="hive")


@app.command("start")
def hive_start(
    ctx: typer.Context,
    alias: Annotated[
        str,
        typer.Argument(help="Hive alias: localhost, or a hives config / ~/.ssh/config host."),
    ] = "localhost",
    port: Annotated[
        int | None, typer.Option(help="Port the hive listens on (default 7835).")
    ] = None,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Stay attached until Ctrl-C, then stop it.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the hive to become healthy.")
    ] = 30.0,
    beat_interval: Annotated[float | None, typer.Option(hidden=True)] = None,
    accept_new_host_key: AcceptNewHostKey = False,
    lend_memory: Annotated[
        str | None,
        typer.Option(
            "--lend-memory",
            metavar="SIZE",
            help="Most memory the queen may place on this hive (a worker or a share of a "
            "split), e.g. 2G, 512M, 1.5GiB; default: all that is free.",
        ),
    ] = None,
) -> None:
    """Start a hive beating to the queen, stream its startup, leave it running once healthy."""
    from keeper.commands import hive

    hive.start(
        settings_of(ctx),
        alias,
        port=port,
        foreground=foreground,
        timeout=timeout,
        beat_interval=beat_interval,
        accept_new_host_key=accept_new_host_key,
        lend_memory=lend_memory,
    )


@app.command("stop")
def hive_stop(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="Hive alias.")] = "localhost",
    accept_new_host_key: AcceptNewHostKey = False,
) -> None:
    """Stop a hive and its workers: SIGTERM, then SIGKILL after the grace period."""
    from keeper.commands import hive

    hive.stop(settings_of(ctx), alias, accept_new_host_key=accept_new_host_key)


@app.command("status")
def hive_status(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="Hive alias.")] = "localhost",
    accept_new_host_key: AcceptNewHostKey = False,
) -> None:
    """Is the hive running, and what are its workers doing? (asked through the queen; a
    remote hive's process is checked over SSH)"""
    from keeper.commands import hive

    hive.status(settings_of(ctx), alias, accept_new_host_key=accept_new_host_key)


@app.command("logs")
def hive_logs(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="Hive alias.")] = "localhost",
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[
        int, typer.Option("-n", "--lines", help="How many last lines to show.", min=0)
    ] = 50,
    accept_new_host_key: AcceptNewHostKey = False,
) -> None:
    """Show a hive's log file (its stdout and stderr since the last start)."""
    from keeper.commands import hive

    hive.logs(
        settings_of(ctx),
        alias,
        follow=follow,
        lines=lines,
        accept_new_host_key=accept_new_host_key,
    )


@app.command("list")
def hive_list(ctx: typer.Context) -> None:
    """List the hives: localhost and those of the hives config (how the keeper reaches
    them), then the ones the queen knows (config and heartbeats), stale ones marked.

    Hosts of ~/.ssh/config are not listed: any of them can still be named to `hive install`
    or `hive start`. With --json: the events as JSON lines, for scripts.
    """
    from keeper.commands import hive

    hive.list_hives(settings_of(ctx))


@app.command("install")
def hive_install(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="Hive alias (a remote machine).")],
    venv: Annotated[
        str | None,
        typer.Option(help="The venv path on the remote (default: its config's, ~/.rbee/venv)."),
    ] = None,
    with_index: Annotated[
        bool,
        typer.Option(
            "--with-index", help="Let the remote's pip fetch dependencies from its index."
        ),
    ] = False,
    accept_new_host_key: AcceptNewHostKey = False,
) -> None:
    """Install rbee on a remote machine over SSH: wheels built here, copied by SFTP, no index
    needed there."""
    from keeper.commands import hive

    hive.install(
        settings_of(ctx),
        alias,
        venv=venv,
        with_index=with_index,
        accept_new_host_key=accept_new_host_key,
    )
