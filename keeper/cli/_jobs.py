"""`keeper jobs list|show|logs|cancel`."""

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


@app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a running job."""
    from keeper.commands import jobs

    jobs.cancel(settings_of(ctx), job_id)
