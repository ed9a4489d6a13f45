"""Errors queen-rbee raises before or outside jobs.

QueenError
├── QueenConfigError  the command line / environment cannot be served as given (exit 2)
└── UnknownHive       a job named a hive the queen does not know (the job fails)
"""

from __future__ import annotations


class QueenError(Exception):
    """Root of queen-rbee's own errors."""


class QueenConfigError(QueenError):
    """Raised when the settings are unsafe or malformed; the CLI exits 2 with the message."""


class UnknownHive(QueenError):
    """Raised when an operation names a hive the queen has no URL for."""

    def __init__(self, hive_id: str, known: list[str]) -> None:
        self.hive_id = hive_id
        self.known = known
        names = ", ".join(known) or "none"
        super().__init__(
            f"no hive {hive_id!r} is known to the queen (known: {names}); "
            "start the queen with --hive ID=URL"
        )
