"""Errors queen-rbee raises before or outside jobs.

QueenError
├── QueenConfigError  the command line / environment cannot be served as given (exit 2)
├── UnknownHive       a job named a hive the queen does not know (the job fails)
└── HiveRefusedToken  a hive answered 401: its token in the hives config is missing or wrong
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
            f"no hive {hive_id!r} is known to the queen (known: {names}); start that hive "
            "with this queen as its --queen-url (it announces itself in its first heartbeat), "
            "or give the queen its URL (--hive ID=URL, or url in hives.toml)"
        )


class HiveRefusedToken(QueenError):
    """Raised (and recorded as the job's failure) when a hive answers 401 to the queen.

    The queen's own token is never sent upstream, so the fix is always the hive's entry
    in the hives config.
    """

    def __init__(self, hive_id: str, url: str, *, had_token: bool) -> None:
        self.hive_id = hive_id
        self.url = url
        self.had_token = had_token
        what = (
            "refused the token the hives config gives it"
            if had_token
            else "requires a token and the hives config gives it none"
        )
        super().__init__(
            f'hive {hive_id} at {url} {what}; set token = "<the hive\'s token>" under '
            f"[hives.{hive_id}] in hives.toml in the queen's config folder and restart the queen"
        )
