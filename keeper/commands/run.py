"""`keeper run -- CMD ARGS...`: any command under narration capture, rendered live.

Exit codes follow the shell, so `keeper run` can stand in for the command in scripts:
the command's own code; 127 when the program does not exist and 126 when it cannot be
executed (as sh and bash report them); 130 on Ctrl-C, after the command's whole process
tree has been stopped. When the reader of its output leaves (`keeper run -- yes | head -1`),
the command's stdout is closed, so it meets SIGPIPE as in a pipeline: 141, said quietly.
"""

from __future__ import annotations

import shlex
import signal
import sys
from typing import TYPE_CHECKING

import anyio

from jobs import how_it_ended
from keeper.errors import JobFailed, ReaderLeft, UsageError
from keeper.settings import KeeperSettings
from narration_core import Level

if TYPE_CHECKING:
    from keeper.output import Renderer
    from keeper.supervise import StopSignals
    from narration_core import EarlyChild

EXIT_NOT_FOUND = 127  # the shell's code for "command not found"
EXIT_NOT_EXECUTABLE = 126  # the shell's code for "found but cannot be executed"


def run(
    settings: KeeperSettings,
    argv: list[str],
    *,
    actor: str = "run",
    job_id: str | None = None,
    early: EarlyChild | None = None,
) -> None:
    """Run `argv`, show everything it prints, and return when it exits with 0.

    `early`: `argv` already started by `EarlyChild.start` while the keeper was loading
    (keeper.__main__ does, so the command does not wait for the keeper's imports); it is
    taken over here. The caller stops it if this raises before the take-over
    (`early.taken` still False).

    Raises:
        UsageError: no command was given.
        JobFailed: the command exited nonzero (`exit_code` is its code) or could not start.
        ReaderLeft: the reader of stdout left and the command died of SIGPIPE (141).
        KeyboardInterrupt: Ctrl-C; the command's tree is stopped first.
    """
    if not argv:
        raise UsageError("`keeper run` needs a command after --, e.g. `keeper run -- make test`")
    if anyio.run(_run, settings, list(argv), actor, job_id, early):
        raise KeyboardInterrupt  # the tree is gone; __main__ reports it and exits 130


async def _run(
    settings: KeeperSettings,
    argv: list[str],
    actor: str,
    job_id: str | None,
    early: EarlyChild | None,
) -> bool:
    """Run and relay the command; True when a stop signal ended it."""
    from keeper.output import make_renderer
    from keeper.supervise import open_stop_signals
    from narration_core import narration_context

    # Signals are taken over before the spawn, so none can cancel it half-way.
    with open_stop_signals() as stops:
        if early is not None:  # a stop signal held since its spawn is acted on from here
            early.release_signals()
        renderer = make_renderer(settings, err_file=sys.stderr)
        with renderer, narration_context(job_id=job_id):
            return await _supervise(stops, renderer, argv, actor, job_id, early)


async def _supervise(
    stops: StopSignals,
    renderer: Renderer,
    argv: list[str],
    actor: str,
    job_id: str | None,
    early: EarlyChild | None,
) -> bool:
    from narration_core import Narrator
    from narration_core.capture import ProcessNarrationCapture

    narrate = Narrator("keeper")
    command = shlex.join(argv)
    capture = ProcessNarrationCapture(
        job_id, actor=actor, on_progress=renderer.progress, stdout_gone=renderer.reader_left
    )
    try:
        if early is not None:
            proc = capture.adopt(early)
        else:
            proc = await capture.spawn(argv, stdin=None)  # the command reads our stdin
    except FileNotFoundError as exc:
        raise JobFailed(
            f"command not found: {argv[0]!r}; check the name or give its full path",
            exit_code=EXIT_NOT_FOUND,
        ) from exc
    except PermissionError as exc:
        raise JobFailed(
            f"cannot execute {argv[0]!r}: permission denied; check that it is executable",
            exit_code=EXIT_NOT_EXECUTABLE,
        ) from exc
    except OSError as exc:  # e.g. ENOEXEC: a script without a #! line, a foreign binary
        raise JobFailed(
            f"cannot execute {argv[0]!r}: {exc.strerror or exc}; "
            "check that it is a program or a script starting with #!",
            exit_code=EXIT_NOT_EXECUTABLE,
        ) from exc
    narrate.action("run").target(proc.pid).human(f"Running {command} (pid {proc.pid})").emit()
    renderer.status(f"Running {command}")

    def stopping(sig: signal.Signals) -> None:
        renderer.status(f"Stopping {command}")
        narrate.action("stop").target(proc.pid).human(
            f"{sig.name}: stopping {command} (pid {proc.pid}) and everything it started; "
            "a second Ctrl-C or signal kills them at once"
        ).emit()

    async with proc:
        code, stopped_by = await stops.wait(proc, on_stop=stopping)
    renderer.status(None)
    if stopped_by is not None:
        return True
    level: Level = "info" if code == 0 else "error"
    narrate.action("exit").target(proc.pid).level(level).human(
        f"{command} {how_it_ended(code)}"
    ).emit()
    # Killed by SIGPIPE, or a shell whose pipeline was (it exits 128 + 13).
    if code in (-signal.SIGPIPE, 128 + signal.SIGPIPE) and renderer.reader_left():
        raise ReaderLeft()
    if code != 0:
        # A child killed by signal N reports -N; the shell convention is 128 + N.
        exit_code = code if code > 0 else 128 - code
        raise JobFailed(f"{command} {how_it_ended(code)}", exit_code=exit_code)
    return False
