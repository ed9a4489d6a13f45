"""`keeper model download|list|delete`: jobs the queen hands to a hive."""

from typing import Annotated

import typer

from keeper.cli._common import HiveOption, settings_of

app = typer.Typer(help="Download, list and delete models on a hive.", no_args_is_help=True)


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
