"""`keeper infer`: a prompt through the queen."""

from typing import Annotated

import typer

from jobs import (
    MAX_TOKENS_DEFAULT,
    MAX_TOKENS_LIMIT,
    TEMPERATURE_DEFAULT,
    TEMPERATURE_MAX,
    TOP_K_DEFAULT,
    TOP_K_MIN,
    TOP_P_DEFAULT,
    TOP_P_MAX,
)
from keeper.cli._common import NoAutostart, settings_of


def register(root: typer.Typer) -> None:
    root.command("infer")(infer)


def _probability_mass(value: float) -> float:
    """--top-p: above 0 (Typer's `min` cannot exclude its bound), at most the whole mass."""
    if not 0 < value <= TOP_P_MAX:
        raise typer.BadParameter(f"{value:g} is not in the range 0<x<={TOP_P_MAX:g}")
    return value


def infer(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            help="Model ref: builtin:smollm2 (a small real chat model), builtin:tiny (random "
            "weights), hf:org/repo/file.gguf, a path, a URL."
        ),
    ],
    prompt: Annotated[
        str | None, typer.Argument(help="The prompt (not needed with --explain).")
    ] = None,
    max_tokens: Annotated[
        int,
        typer.Option(help="Tokens to generate at most.", min=1, max=MAX_TOKENS_LIMIT),
    ] = MAX_TOKENS_DEFAULT,
    temperature: Annotated[
        float,
        typer.Option(
            help="Sampling temperature (0: always the likeliest token).",
            min=0,
            max=TEMPERATURE_MAX,
        ),
    ] = TEMPERATURE_DEFAULT,
    top_p: Annotated[
        float,
        typer.Option(
            help=f"Nucleus sampling: keep this much mass (0<x<={TOP_P_MAX:g}).",
            callback=_probability_mass,
        ),
    ] = TOP_P_DEFAULT,
    top_k: Annotated[
        int, typer.Option(help="Sample among the k likeliest (0: all).", min=TOP_K_MIN)
    ] = TOP_K_DEFAULT,
    seed: Annotated[int | None, typer.Option(help="Sampling seed for repeatable output.")] = None,
    stop: Annotated[
        list[str] | None, typer.Option(help="Stop when the text contains this (repeatable).")
    ] = None,
    hive: Annotated[
        str | None, typer.Option("--hive", help="Hive to run on (default: any with the model).")
    ] = None,
    worker: Annotated[
        str | None, typer.Option("--worker", help="Worker id to run on (default: any idle one).")
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(
            "--system",
            help='The system message before the prompt (default: "You are a helpful '
            "assistant.\", as llama.cpp's llama-cli; --system '' sends none, so the model's "
            "template chooses). Not with --raw.",
        ),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw", help="Send the prompt as it is, not as a chat message through the template."
        ),
    ] = False,
    no_autostart: NoAutostart = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Print where the queen would place the model (one hive, or a split by "
            "layers) and run nothing; with --json, the plan as JSON.",
        ),
    ] = False,
) -> None:
    """Run a prompt on a worker and print the tokens as they arrive.

    The prompt is a user message, rendered through the model's chat template (as
    `ollama run` does); `--raw` sends it as it is, for base models and exact prompts.
    With stdout redirected (`> answer.txt`) stdout holds exactly the text plus one final
    newline, and the narration goes to stderr. A worker with the model is started (and
    the model fetched into the hive's catalog) when none runs; Ctrl-C stops generation.
    `--explain` prints where that worker would go instead, starting nothing.
    """
    from keeper.commands import infer as infer_cmd

    if explain:
        if worker is not None:
            raise typer.BadParameter("--explain shows where a new worker would go, not --worker")
        infer_cmd.explain(settings_of(ctx), model, hive=hive)
        return
    if prompt is None:
        raise typer.BadParameter("a prompt is needed (or --explain)", param_hint="PROMPT")
    if raw and system is not None:
        raise typer.BadParameter("--system adds a chat message; it cannot go with --raw")
    operation = infer_cmd.operation(
        prompt,
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        stop=stop or [],
        hive=hive,
        worker=worker,
        system=system,
        raw=raw,
    )
    infer_cmd.infer(settings_of(ctx), operation, autostart=not no_autostart)
