"""`keeper` entry point: runs the command tree and maps errors to exit codes in one place."""

from __future__ import annotations

import errno
import sys
import warnings
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from keeper.run_argv import OneShot, RunArgs
    from keeper.settings import KeeperSettings
    from narration_core import EarlyChild

# Used by nobody in the keeper, yet imported whenever installed: httpcore tries trio (a
# test tool may bring it, ~100 ms) and httpx its own CLI (click, pygments: ~25 ms) on
# every command that talks to a server. None in sys.modules reads as "not installed".
UNUSED_MODULES = ("trio", "httpx._main")
# A write that failed for these reasons lost the keeper's output (no file name: a stream).
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
# A file of the keeper's own that it may not write: said in one sentence, not as a bug.
FILE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT})


def main(argv: list[str] | None = None) -> int:
    if not sys.warnoptions:  # -W or PYTHONWARNINGS: the user asked to see them
        # A library's deprecation notice (asyncssh under a new cryptography) is for its
        # developers, not for the keeper's user: never on screen, whatever the command.
        warnings.simplefilter("ignore")
    for name in UNUSED_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not installed"
    if sys.stdout is None or sys.stderr is None:
        _discard_closed_output()
    _treat_term_and_hup_as_ctrl_c()

    from keeper import run_argv

    quick = run_argv.read(sys.argv[1:] if argv is None else argv)
    if quick is not None:
        return _run(quick)
    shot = run_argv.read_one_shot(sys.argv[1:] if argv is None else argv)
    if shot is not None:
        return _one_shot(shot)

    import typer

    from keeper import cli
    from keeper.errors import EXIT_INTERRUPTED, EXIT_USAGE, KeeperError

    try:
        result = cli.app(args=argv, prog_name="keeper", standalone_mode=False)
    except KeeperError as err:
        _report(err, verbose=cli.current.verbose)
        return err.exit_code
    except typer.Exit as done:  # Typer turns Ctrl-C inside a command into Exit(130)
        if done.exit_code == EXIT_INTERRUPTED:
            sys.stderr.write("keeper: interrupted\n")
        return done.exit_code
    except (KeyboardInterrupt, typer.Abort):
        sys.stderr.write("keeper: interrupted\n")
        return EXIT_INTERRUPTED
    except SystemExit as done:  # Typer ends a write to a pipe nobody reads with exit 1
        if isinstance(done.__context__, BrokenPipeError):
            return 0  # the reader chose to stop (`keeper queen logs | head -1`): no error
        raise
    except OSError as err:  # stdout on a full disk, outside the renderer (tables, listings)
        if err.filename is not None or err.errno not in OUTPUT_ERRNOS:
            return _unexpected(err, verbose=cli.current.verbose)
        from keeper.errors import OutputLost

        lost = OutputLost.because(err)
        _report(lost, verbose=cli.current.verbose)
        return lost.exit_code
    except typer.TyperException as err:  # usage errors: Typer prints them with the usage line
        show = getattr(err, "show", None)
        if show is not None:
            show()
        else:
            sys.stderr.write(f"keeper: {err.format_message()}\n")
        return EXIT_USAGE
    except Exception as err:
        return _unexpected(err, verbose=cli.current.verbose)
    if result == EXIT_INTERRUPTED:  # Ctrl-C: Typer returns 130 when not standalone
        sys.stderr.write("keeper: interrupted\n")
    return result if isinstance(result, int) else 0


def _run(args: RunArgs) -> int:
    """`keeper run` without Typer (see keeper.run_argv): the same command, the same
    settings, errors and exit codes as the command tree gives it. The command starts
    before the keeper loads its event loop and renderers (narration_core's EarlyChild),
    so it runs during those imports rather than after them."""
    from keeper.errors import EXIT_INTERRUPTED, KeeperError
    from keeper.settings import KeeperSettings, check_home, check_queen_url

    early = None
    try:
        check_home()
        check_queen_url(None)
        early = _start_early(args.command)
        settings = KeeperSettings.build(
            json=args.json, no_color=args.no_color, verbose=args.verbose, queen_url=None
        )
        from keeper.commands import run as run_cmd

        run_cmd.run(settings, args.command, actor=args.actor, job_id=args.job, early=early)
    except KeeperError as err:
        _report(err, verbose=args.verbose)
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("keeper: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as err:
        return _unexpected(err, verbose=args.verbose)
    finally:
        if early is not None and not early.taken:  # interrupted while loading: stop it
            early.stop()
    return 0


def _start_early(command: list[str]) -> EarlyChild | None:
    """`command` started now, or None when it cannot be (no command, a missing program):
    the command then starts it again later and reports why it could not, as the tree's
    `keeper run` does."""
    if not command:
        return None
    from narration_core import EarlyChild

    try:
        # The command reads our stdin; a stop signal waits for the supervisor's handlers.
        return EarlyChild.start(command, stdin=None, hold_signals=True)
    except OSError:
        return None


def _one_shot(shot: OneShot) -> int:
    """`keeper status`, `queen stop` or `infer` without Typer (see keeper.run_argv): the
    same command with the same settings, errors and exit codes as the command tree's."""
    from keeper.errors import EXIT_INTERRUPTED, KeeperError, OutputLost
    from keeper.settings import KeeperSettings, check_home, check_queen_url

    try:
        check_home()
        settings = KeeperSettings.build(
            json=shot.json, no_color=shot.no_color, verbose=shot.verbose, queen_url=shot.queen_url
        )
        check_queen_url(shot.queen_url)
        one_shot_command(shot, settings)
    except KeeperError as err:
        _report(err, verbose=shot.verbose)
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("keeper: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0  # the reader chose to stop (`keeper status | head -1`), as under Typer
    except OSError as err:  # stdout on a full disk, outside the renderer (tables)
        if err.filename is not None or err.errno not in OUTPUT_ERRNOS:
            return _unexpected(err, verbose=shot.verbose)
        lost = OutputLost.because(err)
        _report(lost, verbose=shot.verbose)
        return lost.exit_code
    except Exception as err:
        return _unexpected(err, verbose=shot.verbose)
    return 0


def one_shot_command(shot: OneShot, settings: KeeperSettings) -> None:
    """Call what the command tree calls for `shot` (tests/keeper/test_run_argv.py)."""
    if shot.command == "status":
        from keeper.commands import status

        status.show(settings)
    elif shot.command == "queen stop":
        from keeper.commands import queen

        queen.stop(settings)
    else:
        from keeper.commands import infer

        options = dict(shot.options)
        autostart = not options.pop("no_autostart", False)
        infer.infer(settings, infer.operation(**options), autostart=autostart)


def _discard_closed_output() -> None:
    """Started with stdout or stderr closed (`>&-`), write that stream to /dev/null.

    Python leaves a closed stream None (print() then writes nothing), but the renderer and
    error reports write to it, and the first file opened would take its descriptor.
    """
    import os

    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, "w", closefd=False))  # noqa: SIM115 - the process's own stream


def _treat_term_and_hup_as_ctrl_c() -> None:
    """SIGTERM (CI timeouts, systemd) and SIGHUP (closed terminal) take the Ctrl-C path.

    Children run in their own sessions and never see the terminal's signals, so dying
    without cleanup would leave their trees running and a streamed job running on the
    queen. Re-raising as SIGINT reuses the one cancellation path asyncio already has.
    Commands that own a child tree (`keeper run`) take all three over while it runs
    (`keeper.supervise`): there a second signal kills the tree.
    """
    import signal

    def as_interrupt(signum: int, frame: object) -> None:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # Started with Ctrl-C ignored (a script's background job): a raised SIGINT
            # would be ignored too, so SIGTERM would not stop us. Interrupt directly.
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, as_interrupt)


def _report(err: BaseException, *, verbose: bool) -> None:
    from keeper.errors import ReaderLeft

    if isinstance(err, ReaderLeft):
        return  # the reader chose to stop, as `yes | head -1` says nothing either
    from narration_core import redact
    from narration_core.sanitize import strip_control_lines

    # Messages can quote a command line or an upstream's error: same care as narration,
    # in the traceback that quotes them too. Newlines stay: some messages show a sample.
    if verbose:
        import traceback

        sys.stderr.write(strip_control_lines(redact("".join(traceback.format_exception(err)))))
    sys.stderr.write(f"keeper: {strip_control_lines(redact(str(err)))}\n")


def _unexpected(err: Exception, *, verbose: bool) -> int:
    """The last-resort net: an error no command foresaw is one line naming its type (a
    bug to report, or a state to repair), exit 1; the traceback only with -v."""
    from keeper.errors import EXIT_JOB_FAILED, EXIT_USAGE
    from narration_core import redact, strip_control

    if verbose:
        import traceback

        from narration_core.sanitize import strip_control_lines

        sys.stderr.write(strip_control_lines(redact("".join(traceback.format_exception(err)))))
    if isinstance(err, OSError) and err.filename is not None and err.errno in FILE_ERRNOS:
        # A file the keeper keeps (pidfile, config, logs) where it may not write: a full
        # disk fails this command (1); a folder it may not write to is configuration (2).
        full = err.errno in OUTPUT_ERRNOS
        if full:
            verb, fix = "write", "free space there"
        elif err.errno == errno.EROFS:
            verb, fix = "write", "make it writable, or point RBEE_HOME at a folder you can write to"
        else:  # EACCES/EPERM: the call may have been a read as well as a write
            verb, fix = "use", "make it yours, or point RBEE_HOME at a folder you own"
        where = strip_control(str(err.filename))
        sys.stderr.write(f"keeper: cannot {verb} {where} ({err.strerror}); {fix}\n")
        return EXIT_JOB_FAILED if full else EXIT_USAGE
    what = strip_control(redact(f"{type(err).__name__}: {err}"))
    sys.stderr.write(f"keeper: unexpected error ({what}); run again with -v to see where\n")
    return EXIT_JOB_FAILED


def run() -> NoReturn:
    """The console scripts' entry: `main`, then exit without the interpreter's teardown.

    Once `main` returns, the keeper's threads are joined, its files closed and its
    children stopped, so teardown would only free memory: ~20 ms on every command.
    """
    code = main()
    from jobs import exit_process

    exit_process(code)


if __name__ == "__main__":
    run()
