"""`keeper worker spawn|list|stop`: jobs the queen hands to a hive."""

from typing import Annotated

import typer

from keeper.cli._common import HiveOption, NoAutostart, settings_of

app = typer.Typer(help="Spawn, list and stop inference workers.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="worker")


@app.command("spawn")
def worker_spawn(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option(help="Model ref: path, URL, hf:org/repo/file.gguf, builtin:tiny.")
    ],
    hive: HiveOption = "localhost",
    device: Annotated[str, typer.Option(help="cpu or cuda:N.")] = "cpu",
    parallel: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Requests it generates for at once (default: 2 on cpu, 4 on a GPU)."
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads (default: the physical cores).")
    ] = None,
    ctx_size: Annotated[
        int | None,
        typer.Option(
            min=64, help="Context tokens per request (default 4096, never above the model's)."
        ),
    ] = None,
    no_autostart: NoAutostart = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Print where the worker would go (the hive whole, or a split by layers with "
            "its worker there) and spawn nothing; with --json, the plan as JSON.",
        ),
    ] = False,
) -> None:
    """Spawn a worker with a model on a hive; shows its startup until it is ready."""
    from keeper.commands import worker

    if explain:
        from keeper.commands.infer import explain as explain_plan

        if device != "cpu":  # the plan weighs the hives' RAM, not a GPU's VRAM
            raise typer.BadParameter("--explain plans by the hives' memory (RAM): use --device cpu")
        explain_plan(settings_of(ctx), model, hive=hive, ctx_size=ctx_size, parallel=parallel)
        return

    if not no_autostart and hive == "localhost":
        from keeper.autostart import ensure_local_chain

        ensure_local_chain(settings_of(ctx))
    worker.spawn(
        settings_of(ctx),
        model=model,
        hive=hive,
        device=device,
        parallel=parallel,
        threads=threads,
        ctx_size=ctx_size,
    )


@app.command("list")
def worker_list(ctx: typer.Context, hive: HiveOption = "localhost") -> None:
    """List a hive's workers.

    With --json: the events as JSON lines (the last one holds the list), for scripts.
    """
    from keeper.commands import worker

    worker.list_workers(settings_of(ctx), hive=hive)


@app.command("stop")
def worker_stop(
    ctx: typer.Context,
    worker_id: Annotated[str, typer.Argument(metavar="ID", help="Worker id.")],
    hive: HiveOption = "localhost",
) -> None:
    """Stop a worker."""
    from keeper.commands import worker

    worker.stop(settings_of(ctx), worker_id, hive=hive)
