"""The keeper's session with the queen: submit a job, follow it, map the client's errors.

`stream_operation` submits an operation to the queen and renders the job's events live;
Ctrl-C cancels the job on the queen before the keeper exits 130. Queen errors are
translated into keeper errors (and so exit codes) in `queen_errors`, in one place.

Commands talk to the queen with the blocking `SyncJobClient`: following one job needs
no event loop, and not starting asyncio saves ~50 ms of every command (a third of
`keeper status`). Ctrl-C arrives as KeyboardInterrupt wherever the command waits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from jobs import TOKEN_ENV, WireOperation
from keeper.errors import DaemonUnreachable, JobFailed, KeeperError, UsageError
from keeper.output import Renderer, make_renderer
from keeper.settings import KeeperSettings
from narration_core import Narrator

if TYPE_CHECKING:
    from jobs.client import SyncJobClient

CANCEL_TIMEOUT_S = 5.0  # how long Ctrl-C waits for the queen to confirm a cancel

NARRATE = Narrator("keeper")
EventView = Callable[[Renderer, str, Any], bool]  # shows an event itself -> True


def stream_operation(
    settings: KeeperSettings,
    operation: WireOperation,
    *,
    view: EventView | None = None,
    file: IO[str] | None = None,
) -> None:
    """Submit `operation`, render its events until the job ends; raise if it did not complete.

    `view(out, kind, data)` sees each event first and returns True when it has shown it
    itself (a download's progress bar, `keeper infer`'s text); the renderer shows the
    rest, on `file` (default stdout).
    """
    name = operation.get("operation", "job")
    with make_renderer(settings, file=file) as out:
        out.status(f"Submitting {name} to the queen")
        with open_client(settings) as client:
            job_id = client.submit(operation)
            NARRATE.action("submitted").target(job_id).level("debug").human(
                f"Job {job_id} ({name}) submitted to {settings.queen_url}"
            ).emit()
            out.status(f"Running {name} ({job_id})")
            follow(client, job_id, out, cancel_on_interrupt=True, view=view)


def follow(
    client: SyncJobClient,
    job_id: str,
    out: Renderer,
    *,
    cancel_on_interrupt: bool,
    until: int | None = None,
    view: EventView | None = None,
) -> None:
    """Render a job's events; raise JobFailed if it ends failed or cancelled."""
    from jobs import DaemonUnreachable as Unreachable

    final: dict[str, Any] | None = None
    try:
        for event in client.stream(job_id):
            if view is None or not view(out, event.kind, event.data):
                out.job_event(event.kind, event.data)
            if event.is_final:
                final = event.data
            if until is not None and event.seq >= until:
                return
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP turned into it by __main__
        if cancel_on_interrupt:
            _cancel_quietly(client, job_id)
        raise
    except Unreachable as exc:  # the queen died mid-job (crash, kill -9): name the job
        raise DaemonUnreachable(
            f"lost the queen at {exc.url} while following job {job_id} "
            f"({exc.reason or 'no answer'}); once it runs again, `keeper jobs logs {job_id}` "
            "shows how the job ended"
        ) from exc
    if final is None:
        return
    state = final.get("state")
    if state == "failed":
        raise JobFailed(f"job {job_id} failed: {final.get('error') or 'no reason given'}")
    if state == "cancelled":
        raise JobFailed(f"job {job_id} was cancelled")


def _cancel_quietly(client: SyncJobClient, job_id: str) -> None:
    from jobs import JobError

    try:
        client.cancel(job_id, timeout_s=CANCEL_TIMEOUT_S)
        NARRATE.action("cancel").target(job_id).human(f"Cancelled job {job_id} on the queen").emit()
    except JobError:
        pass  # it ended on its own meanwhile, or the queen is gone: nothing left to cancel


@contextlib.contextmanager
def open_client(settings: KeeperSettings) -> Iterator[SyncJobClient]:
    """A client for the queen; its errors leave as keeper errors (`queen_errors`)."""
    from jobs.client import SyncJobClient

    with (
        queen_errors(settings),
        SyncJobClient(settings.queen_url, token=settings.token()) as client,
    ):
        yield client


@contextlib.contextmanager
def queen_errors(settings: KeeperSettings) -> Iterator[None]:
    """Translate the job client's errors into keeper errors with their exit codes."""
    import jobs

    try:
        yield
    except jobs.NotAJobServer as exc:
        raise DaemonUnreachable(
            f"{settings.queen_url} is not a queen: something else answers there "
            f"({exc.reason}); pass the queen's URL with --queen-url, or stop that program "
            "and run `keeper queen start`"
        ) from exc
    except jobs.DaemonUnreachable as exc:
        if exc.url.rstrip("/") != settings.queen_url:  # the queen answered: its hive did not
            raise DaemonUnreachable(str(exc)) from exc
        raise DaemonUnreachable(
            f"queen is not reachable at {settings.queen_url}; "
            "start it with `keeper queen start` or pass --queen-url"
        ) from exc
    except jobs.AuthRequired as exc:
        if settings.token() is not None:  # sent, and refused: setting it is not the fix
            raise DaemonUnreachable(
                f"the queen at {settings.queen_url} refused the token in {TOKEN_ENV}; "
                f"set {TOKEN_ENV} to the one the queen was started with"
            ) from exc
        raise DaemonUnreachable(
            f"the queen at {settings.queen_url} requires a token; set {TOKEN_ENV}"
        ) from exc
    except jobs.JobNotFound as exc:
        raise UsageError(
            f"the queen at {settings.queen_url} has no job {exc.job_id!r}; "
            "`keeper jobs list` shows its jobs"
        ) from exc
    except jobs.JobFinished as exc:
        raise KeeperError(
            f"job {exc.job_id} already ended ({exc.state}); there is nothing to cancel"
        ) from exc
    except jobs.JobError as exc:
        raise KeeperError(f"the queen refused the request: {exc}") from exc


def ask(settings: KeeperSettings, fn: Callable[[SyncJobClient], Any]) -> Any:
    """`fn(client)` on a client for the queen, its errors mapped as `open_client` does."""
    with open_client(settings) as client:
        return fn(client)
