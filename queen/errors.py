"""Errors queen-rbee raises before or outside jobs.

QueenError
├── QueenConfigError  the command line / environment cannot be served as given (exit 2)
├── UnknownHive       a job named a hive the queen does not know (the job fails)
├── HiveNotHeard      the queen's own-machine hive has not announced itself (not running)
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


class HiveNotHeard(QueenError):
    """Raised when a job needs this machine's hive, which nobody configured and which has
    not sent this queen a heartbeat: whatever listens on its port is not known to be it,
    so neither the job nor the hive's credential goes there."""

    def __init__(self, hive_id: str, url: str, waited_s: float) -> None:
        self.hive_id = hive_id
        waited = f" in {waited_s:g} s" if waited_s else " yet"
        super().__init__(
            f"hive {hive_id} has not announced itself to this queen (no heartbeat{waited}), "
            f"so nothing is sent to {url}; start it with `keeper hive start {hive_id}`"
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
        if had_token:
            advice = (
                f"refused the token the hives config gives it; set token = \"<the hive's "
                f"token>\" under [hives.{hive_id}] in hives.toml in the queen's config folder "
                "and restart the queen"
            )
        else:
            advice = (
                "refused this queen's credential and the hives config gives it no token; "
                f"restart it with `keeper hive stop {hive_id}` and `keeper hive start "
                f"{hive_id}` (which hand it this queen's credential), or set token = "
                f'"<the hive\'s token>" under [hives.{hive_id}] in hives.toml in the '
                "queen's config folder and restart the queen"
            )
        super().__init__(f"hive {hive_id} at {url} {advice}")
