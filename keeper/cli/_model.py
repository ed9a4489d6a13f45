"""`keeper model download|list|delete`: jobs the queen hands to a hive; `keeper model
serve|unserve`: the workers of a model the queen keeps running (replicas)."""

from typing import Annotated

import typer

from keeper.cli._common import HiveOption, settings_of

app = typer.Typer(
    help="Download, list and delete models on a hive; keep workers of one running.",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="model")


@app.command("download")
def model_download(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Model ref.")],
    hive: HiveOption = "localhost",
) -> None:
    """Download a model into a hive's catalog, with progress."""
    from keeper.commands import model

    model.download(settings_of(ctx), ref, hive=hive)


@app.command("list")
def model_list(ctx: typer.Context, hive: HiveOption = "localhost") -> None:
    """List the models in a hive's catalog.

    With --json: the events as JSON lines (the last one holds the list), for scripts.
    """
    from keeper.commands import model

    model.list_models(settings_of(ctx), hive=hive)


@app.command("delete")
def model_delete(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Model ref.")],
    hive: HiveOption = "localhost",
) -> None:
    """Delete a model from a hive's catalog."""
    from keeper.commands import model

    model.delete(settings_of(ctx), ref, hive=hive)


@app.command("serve")
def model_serve(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Model ref.")],
    replicas: Annotated[
        int, typer.Option("--replicas", min=0, help="Workers to keep running (0: stop keeping).")
    ] = 1,
    max_replicas: Annotated[
        int | None,
        typer.Option(
            "--max-replicas", min=1, help="Add workers up to this many while its queue grows."
        ),
    ] = None,
    hive: Annotated[
        str | None, typer.Option("--hive", help="Hive alias (default: any, placed by memory).")
    ] = None,
) -> None:
    """Keep workers of a model running on the hives, replacing any that die.

    The queen remembers it across restarts; `keeper model list` shows what it keeps.
    Workers above --replicas stop once idle for keep_alive (RBEE_KEEP_ALIVE).
    """
    from keeper.commands import model

    model.serve(settings_of(ctx), ref, replicas=replicas, max_replicas=max_replicas, hive=hive)


@app.command("unserve")
def model_unserve(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="Model ref.")]
) -> None:
    """Stop keeping workers of a model running; idle ones stop after keep_alive."""
    from keeper.commands import model

    model.serve(settings_of(ctx), ref, replicas=0)
