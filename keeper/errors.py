"""The keeper's errors, each carrying the exit code the CLI ends with.

Library code raises; `keeper.__main__` prints the one-sentence message (a traceback
only with -v) and exits with `exit_code`, in one place.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class KeeperError(Exception):
    """Something the user can act on; `str(err)` is the sentence to show."""

    exit_code = EXIT_JOB_FAILED


class UsageError(KeeperError):
    """The command line asked for something that cannot be done as asked."""

    exit_code = EXIT_USAGE


class DaemonUnreachable(KeeperError):
    """A daemon (queen, hive) did not answer, or its port is taken by something else."""

    exit_code = EXIT_UNREACHABLE


class OutputLost(KeeperError):
    """The keeper's own output could not be written (a full disk, a terminal gone)."""

    @classmethod
    def because(cls, error: OSError) -> OutputLost:
        """The one sentence for output that `error` kept from being written."""
        return cls(
            f"could not write the output ({error.strerror or error}), so the rest of it was "
            "dropped; free space where it goes, or send it elsewhere"
        )


class ReaderLeft(KeeperError):
    """The reader of the keeper's output left (`keeper run -- yes | head -1`) and the
    command then died of SIGPIPE, as it does in a shell pipeline: the command's exit code
    (141) and nothing to say, since the reader chose to stop."""

    exit_code = 128 + 13  # SIGPIPE


class JobFailed(KeeperError):
    """A job or a child command ended unsuccessfully; `exit_code` is what keeper exits with."""

    def __init__(self, message: str, exit_code: int = EXIT_JOB_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code
