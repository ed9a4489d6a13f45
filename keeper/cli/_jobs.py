"""`keeper jobs list|show|logs|trace|cancel`."""

from typing import Annotated

import typer

from keeper.cli._common import settings_of

app = typer.Typer(help="List, inspect, follow and cancel jobs on the queen.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="jobs")


@app.command("list")
def jobs_list(ctx: typer.Context) -> None:
    """List the queen's jobs with their state and times.

    With --json: one JSON object per job, for scripts.
    """
    from keeper.commands import jobs

    jobs.list_jobs(settings_of(ctx))


@app.command("show")
def jobs_show(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one job's state and its transitions.

    With --json: the job as one JSON object, for scripts.
    """
    from keeper.commands import jobs

    jobs.show(settings_of(ctx), job_id)


@app.command("logs")
def jobs_logs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep streaming until the job ends.")
    ] = False,
) -> None:
    """Print a job's events from the start (and follow it while it runs with -f)."""
    from keeper.commands import jobs

    jobs.logs(settings_of(ctx), job_id, follow=follow)


@app.command("trace")
def jobs_trace(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show where one request's time went: a waterfall of its spans across keeper, queen,
    hive and worker (queued, model download, worker spawn, model load, prompt evaluation,
    first token, generation, relay), each with its start, duration, hop and host.

    ID is the queen's job (`keeper infer` names it). With --json: the trace as one JSON
    object, its spans included, for scripts.
    """
    import json
    import sys

    from keeper import session
    from keeper.output import print_tables, trace_waterfall

    settings = settings_of(ctx)
    if not job_id or "/" in job_id or not job_id.isprintable():
        from keeper.errors import UsageError

        raise UsageError(f"{job_id!r} is not a job id; `keeper jobs list` shows the queen's jobs")
    trace = session.ask(settings, lambda client: client.trace(job_id))
    if settings.json:
        sys.stdout.write(json.dumps({"event": "trace", **trace}) + "\n")
        return
    print_tables(settings, trace_waterfall(trace))


@app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a running job."""
    from keeper.commands import jobs

    jobs.cancel(settings_of(ctx), job_id)
