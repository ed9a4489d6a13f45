"""`keeper jobs list|show|logs|cancel`: the queen's jobs, through the session."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from jobs import FINAL_STATES
from keeper import session
from keeper.errors import UsageError
from keeper.output import make_renderer, print_tables
from keeper.settings import KeeperSettings
from narration_core import Narrator

NARRATE = Narrator("keeper")

# -- jobs list / show / logs / cancel -------------------------------------------------


def list_jobs(settings: KeeperSettings) -> None:
    jobs = session.ask(settings, lambda c: c.list_jobs())
    if settings.json:
        sys.stdout.writelines(json.dumps({"event": "job", **job}) + "\n" for job in jobs)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold")
    for column in ("JOB", "STATE", "OPERATION", "CREATED", "ELAPSED"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            job["job_id"],
            job["state"],
            _operation_name(job.get("operation")),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created_at"])),
            _took(job),
        )
    print_tables(settings, table if jobs else Text("No jobs yet."))


def _took(job: dict[str, Any]) -> str:
    """How long a finished job took, or how long a live one has run until now."""
    if job["state"] in FINAL_STATES:
        return f"{job['updated_at'] - job['created_at']:.1f}s"
    return f"{max(0.0, time.time() - job['created_at']):.1f}s so far"


def _operation_name(operation: Any) -> str:
    if isinstance(operation, dict):
        return str(operation.get("operation", "?"))
    return str(operation or "?")


def _check_id(settings: KeeperSettings, job_id: str) -> str:
    """Job ids are one URL path segment (`job-…`); anything else cannot name a job."""
    if not job_id or "/" in job_id or not job_id.isprintable():
        raise UsageError(
            f"{job_id!r} is not a job id; `keeper jobs list` shows the jobs on {settings.queen_url}"
        )
    return job_id


def show(settings: KeeperSettings, job_id: str) -> None:
    _check_id(settings, job_id)
    job = session.ask(settings, lambda c: c.get_job(job_id))
    if settings.json:
        sys.stdout.write(json.dumps({"event": "job", **job}) + "\n")
        return
    out = sys.stdout
    out.write(f"job        {job['job_id']}\n")
    out.write(f"state      {job['state']}\n")
    out.write(f"operation  {json.dumps(job.get('operation'))}\n")
    if job.get("trace_id"):  # `keeper jobs trace ID` draws where the request's time went
        out.write(f"trace      {job['trace_id']}\n")
    if job.get("parent_job"):
        out.write(f"parent     {job['parent_job']}\n")
    if job.get("error"):
        out.write(f"error      {job['error']}\n")
    for step in job.get("transitions", []):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(step["at"]))
        out.write(f"  {stamp}  {step['state']}\n")


def logs(settings: KeeperSettings, job_id: str, *, follow: bool) -> None:
    """Every event of the job from the start; without -f stop at what exists now."""
    _check_id(settings, job_id)

    with make_renderer(settings) as out, session.open_client(settings) as client:
        until = None
        if not follow:
            job = client.get_job(job_id)
            if job["state"] not in FINAL_STATES:
                until = job.get("events")
                if until == 0:
                    return
        session.follow(client, job_id, out, cancel_on_interrupt=False, until=until)


def cancel(settings: KeeperSettings, job_id: str) -> None:
    _check_id(settings, job_id)
    state = session.ask(settings, lambda c: c.cancel(job_id))
    with make_renderer(settings):
        NARRATE.action("cancel").target(job_id).human(f"Job {job_id} is {state}").emit()
