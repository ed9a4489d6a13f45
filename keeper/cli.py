"""The keeper command tree (reference: docs/cli.md).

Commands here only parse arguments and hand over to `keeper.commands.*`, imported
inside each command: `keeper --help` must not pay for HTTP clients, servers or SSH.

No `from __future__ import annotations` here: Typer reads every command's signature on
every run, and string annotations would make it eval ~450 of them (~12 ms per command).
"""

from typing import Annotated

import typer
from typer import _click  # Typer's own copy of click: the classes its commands are built on
from typer._click.exceptions import BadOptionUsage
from typer.core import TyperGroup

from jobs import MAX_TOKENS_LIMIT, TEMPERATURE_MAX, TOP_K_MIN, TOP_P_MAX
from keeper.settings import KeeperSettings, check_home, check_queen_url


class KeeperGroup(TyperGroup):
    """The command tree's root: its options (--json, --no-color, --queen-url, -v) are read
    after the command too (`keeper status --json`), up to `--` or `keeper run`'s command,
    which belong to the command (keeper.run_argv reads `keeper run` the same way)."""

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_root_options(self, ctx, args))


def hoist_root_options(root: TyperGroup, ctx: _click.Context, args: list[str]) -> list[str]:
    """`args` with the root's options that follow a command moved before it.

    Walks the command path so that an option's value (`--stop --json`) and a command's
    own option of the same name stay where they are; stops at `--`, at an unknown command
    and at the first argument of a command that reads none after it (`run`).
    """
    root_options = _options(root)
    command: _click.Command = root
    hoisted: list[str] = []
    kept: list[str] = []
    at = 0
    while at < len(args) and args[at] != "--":
        arg = args[at]
        name = arg.partition("=")[0] if arg.startswith("--") else arg
        own = _options(command)
        if command is not root and name not in own and name in root_options:
            size = 2 if root_options[name] and "=" not in arg else 1
            if at + size > len(args):  # before the command, it would take the command's name
                raise BadOptionUsage(name, f"Option {name!r} requires an argument.", ctx)
            hoisted += args[at : at + size]
            at += size
            continue
        if arg.startswith("-") and arg != "-":
            size = 2 if own.get(name) and "=" not in arg else 1
            kept += args[at : at + size]  # an option of this command, with its value
            at += size
            continue
        kept.append(arg)
        at += 1
        if isinstance(command, TyperGroup):
            found = command.get_command(ctx, arg)
            if found is None:
                break  # not a command: Typer says so
            command = found
        elif not command.context_settings.get(
            "allow_interspersed_args", command.allow_interspersed_args
        ):
            break  # `run CMD ...`: what follows is the command's
    return [*hoisted, *kept, *args[at:]]


def _options(command: _click.Command) -> dict[str, bool]:
    """Each option name of `command` (`--json`, `--no-json`), and whether it takes a value."""
    names: dict[str, bool] = {}
    for param in command.params:
        if param.param_type_name == "option":
            flag = bool(getattr(param, "is_flag", False) or getattr(param, "count", False))
            for name in (*param.opts, *param.secondary_opts):
                names[name] = not flag
    return names


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
queen_app = typer.Typer(
    help="Start, stop and watch the queen (the job server).", no_args_is_help=True
)
hive_app = typer.Typer(
    help="Start, stop and list hives (one daemon per machine).", no_args_is_help=True
)
worker_app = typer.Typer(help="Spawn, list and stop inference workers.", no_args_is_help=True)
model_app = typer.Typer(help="Download, list and delete models on a hive.", no_args_is_help=True)
jobs_app = typer.Typer(
    help="List, inspect, follow and cancel jobs on the queen.", no_args_is_help=True
)
app.add_typer(queen_app, name="queen")
app.add_typer(hive_app, name="hive")
app.add_typer(worker_app, name="worker")
app.add_typer(model_app, name="model")
app.add_typer(jobs_app, name="jobs")

# The settings of the running invocation, for the error handler in __main__ (-v).
current: KeeperSettings = KeeperSettings()


def _settings(ctx: typer.Context) -> KeeperSettings:
    settings = ctx.find_root().obj
    return settings if isinstance(settings, KeeperSettings) else KeeperSettings()


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


# -- queen -------------------------------------------------------------------------


@queen_app.command("start")
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
        _settings(ctx), port=port, bind=bind, token=token, foreground=foreground, timeout=timeout
    )


@queen_app.command("stop")
def queen_stop(ctx: typer.Context) -> None:
    """Stop the queen: SIGTERM, then SIGKILL if it has not exited after the grace period."""
    from keeper.commands import queen

    queen.stop(_settings(ctx))


@queen_app.command("status")
def queen_status(ctx: typer.Context) -> None:
    """Is the queen running? Its pid, port, uptime and version.

    With --json: one `queen` JSON object, for scripts.
    """
    from keeper.commands import queen

    queen.status(_settings(ctx))


@queen_app.command("logs")
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

    queen.logs(_settings(ctx), follow=follow, lines=lines)


# -- hive ------------------------------------------------------------------------------

AcceptNewHostKey = Annotated[
    bool,
    typer.Option(
        "--accept-new-host-key",
        help="Trust a remote host not yet in known_hosts and store its key (never a changed one).",
    ),
]


@hive_app.command("start")
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
) -> None:
    """Start a hive beating to the queen, stream its startup, leave it running once healthy."""
    from keeper.commands import hive

    hive.start(
        _settings(ctx),
        alias,
        port=port,
        foreground=foreground,
        timeout=timeout,
        beat_interval=beat_interval,
        accept_new_host_key=accept_new_host_key,
    )


@hive_app.command("stop")
def hive_stop(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="Hive alias.")] = "localhost",
    accept_new_host_key: AcceptNewHostKey = False,
) -> None:
    """Stop a hive and its workers: SIGTERM, then SIGKILL after the grace period."""
    from keeper.commands import hive

    hive.stop(_settings(ctx), alias, accept_new_host_key=accept_new_host_key)


@hive_app.command("status")
def hive_status(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="Hive alias.")] = "localhost",
    accept_new_host_key: AcceptNewHostKey = False,
) -> None:
    """Is the hive running, and what are its workers doing? (asked through the queen; a
    remote hive's process is checked over SSH)"""
    from keeper.commands import hive

    hive.status(_settings(ctx), alias, accept_new_host_key=accept_new_host_key)


@hive_app.command("logs")
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
        _settings(ctx),
        alias,
        follow=follow,
        lines=lines,
        accept_new_host_key=accept_new_host_key,
    )


@hive_app.command("list")
def hive_list(ctx: typer.Context) -> None:
    """List the hives: localhost and those of the hives config (how the keeper reaches
    them), then the ones the queen knows (config and heartbeats), stale ones marked.

    Hosts of ~/.ssh/config are not listed: any of them can still be named to `hive install`
    or `hive start`. With --json: the events as JSON lines, for scripts.
    """
    from keeper.commands import hive

    hive.list_hives(_settings(ctx))


@hive_app.command("install")
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
        _settings(ctx),
        alias,
        venv=venv,
        with_index=with_index,
        accept_new_host_key=accept_new_host_key,
    )


# -- worker and model: jobs the queen hands to a hive --------------------------------

HiveOption = Annotated[str, typer.Option("--hive", help="Hive alias.")]


@worker_app.command("spawn")
def worker_spawn(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option(help="Model ref: path, URL, hf:org/repo/file.gguf, builtin:tiny.")
    ],
    hive: HiveOption = "localhost",
    device: Annotated[str, typer.Option(help="cpu or cuda:N.")] = "cpu",
    no_autostart: Annotated[
        bool,
        typer.Option(
            "--no-autostart", help="Do not start a local queen and hive when none is running."
        ),
    ] = False,
) -> None:
    """Spawn a worker with a model on a hive; shows its startup until it is ready."""
    from keeper.commands import worker

    if not no_autostart and hive == "localhost":
        from keeper.autostart import ensure_local_chain

        ensure_local_chain(_settings(ctx))
    worker.spawn(_settings(ctx), model=model, hive=hive, device=device)


@worker_app.command("list")
def worker_list(ctx: typer.Context, hive: HiveOption = "localhost") -> None:
    """List a hive's workers.

    With --json: the events as JSON lines (the last one holds the list), for scripts.
    """
    from keeper.commands import worker

    worker.list_workers(_settings(ctx), hive=hive)


@worker_app.command("stop")
def worker_stop(
    ctx: typer.Context,
    worker_id: Annotated[str, typer.Argument(metavar="ID", help="Worker id.")],
    hive: HiveOption = "localhost",
) -> None:
    """Stop a worker."""
    from keeper.commands import worker

    worker.stop(_settings(ctx), worker_id, hive=hive)


@model_app.command("download")
def model_download(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Model ref.")],
    hive: HiveOption = "localhost",
) -> None:
    """Download a model into a hive's catalog, with progress."""
    from keeper.commands import model

    model.download(_settings(ctx), ref, hive=hive)


@model_app.command("list")
def model_list(ctx: typer.Context, hive: HiveOption = "localhost") -> None:
    """List the models in a hive's catalog.

    With --json: the events as JSON lines (the last one holds the list), for scripts.
    """
    from keeper.commands import model

    model.list_models(_settings(ctx), hive=hive)


@model_app.command("delete")
def model_delete(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Model ref.")],
    hive: HiveOption = "localhost",
) -> None:
    """Delete a model from a hive's catalog."""
    from keeper.commands import model

    model.delete(_settings(ctx), ref, hive=hive)


# What `keeper infer` tells a chat model it is, unless --system says otherwise: the
# default of llama.cpp's own chat CLI. Small models answer plainly with it where their
# template's own default can lead them astray (SmolLM2-135M on "the capital of France").
DEFAULT_SYSTEM = "You are a helpful assistant."


def _probability_mass(value: float) -> float:
    """--top-p: above 0 (Typer's `min` cannot exclude its bound), at most the whole mass."""
    if not 0 < value <= TOP_P_MAX:
        raise typer.BadParameter(f"{value:g} is not in the range 0<x<={TOP_P_MAX:g}")
    return value


@app.command("infer")
def infer(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    model: Annotated[
        str,
        typer.Option(
            help="Model ref: builtin:smollm2 (a small real chat model), builtin:tiny (random "
            "weights), hf:org/repo/file.gguf, a path, a URL."
        ),
    ],
    max_tokens: Annotated[
        int,
        typer.Option(help="Tokens to generate at most.", min=1, max=MAX_TOKENS_LIMIT),
    ] = 128,
    temperature: Annotated[
        float,
        typer.Option(
            help="Sampling temperature (0: always the likeliest token).",
            min=0,
            max=TEMPERATURE_MAX,
        ),
    ] = 0.7,
    top_p: Annotated[
        float,
        typer.Option(
            help=f"Nucleus sampling: keep this much mass (0<x<={TOP_P_MAX:g}).",
            callback=_probability_mass,
        ),
    ] = 0.95,
    top_k: Annotated[
        int, typer.Option(help="Sample among the k likeliest (0: all).", min=TOP_K_MIN)
    ] = 40,
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
    no_autostart: Annotated[
        bool,
        typer.Option(
            "--no-autostart", help="Do not start a local queen and hive when none is running."
        ),
    ] = False,
) -> None:
    """Run a prompt on a worker and print the tokens as they arrive.

    The prompt is a user message, rendered through the model's chat template (as
    `ollama run` does); `--raw` sends it as it is, for base models and exact prompts.
    With stdout redirected (`> answer.txt`) stdout holds exactly the text plus one final
    newline, and the narration goes to stderr. A worker with the model is started (and
    the model fetched into the hive's catalog) when none runs; Ctrl-C stops generation.
    """
    from keeper.commands import infer as infer_cmd

    if raw and system is not None:
        raise typer.BadParameter("--system adds a chat message; it cannot go with --raw")
    operation: dict[str, object] = {
        "operation": "infer",
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "seed": seed,
        "stop": stop or [],
    }
    if raw:
        operation["prompt"] = prompt
    else:
        system = DEFAULT_SYSTEM if system is None else system
        messages = [{"role": "system", "content": system}] if system else []
        operation["messages"] = [*messages, {"role": "user", "content": prompt}]
    if hive is not None:
        operation["hive_id"] = hive
    if worker is not None:
        operation["worker_id"] = worker
    infer_cmd.infer(_settings(ctx), operation, autostart=not no_autostart)


# -- jobs --------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(ctx: typer.Context) -> None:
    """List the queen's jobs with their state and times.

    With --json: one JSON object per job, for scripts.
    """
    from keeper.commands import jobs

    jobs.list_jobs(_settings(ctx))


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one job's state and its transitions.

    With --json: the job as one JSON object, for scripts.
    """
    from keeper.commands import jobs

    jobs.show(_settings(ctx), job_id)


@jobs_app.command("logs")
def jobs_logs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep streaming until the job ends.")
    ] = False,
) -> None:
    """Print a job's events from the start (and follow it while it runs with -f)."""
    from keeper.commands import jobs

    jobs.logs(_settings(ctx), job_id, follow=follow)


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a running job."""
    from keeper.commands import jobs

    jobs.cancel(_settings(ctx), job_id)


@app.command("status")
def status(
    ctx: typer.Context,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Keep showing fresh status until Ctrl-C.")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between updates with --watch.")] = 2.0,
) -> None:
    """The queen, its hives (last beat, stale) and their workers as tables.

    With --json: the status job's events as JSON lines (the last one holds the
    snapshot), for scripts.
    """
    if not watch:
        from keeper.commands import status as status_cmd

        status_cmd.show(_settings(ctx))
        return
    from keeper.commands import queen

    queen.overview(_settings(ctx), watch=watch, interval=interval)


@app.command("ui")
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
    ui_cmd.open_dashboard(_settings(ctx), open_browser=not no_open, port=port, url_given=url_given)


@app.command(
    "run",
    context_settings={"allow_interspersed_args": False},
)
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

    run_cmd.run(_settings(ctx), command, actor=actor, job_id=job)
