"""The keeper's global options, built once from flags and environment and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from jobs import HOME_ENV, LOOPBACK, QUEEN_PORT, QUEEN_URL_ENV, TOKEN_ENV, RbeePaths
from keeper.errors import UsageError

OutputMode = Literal["live", "plain", "json"]
DEFAULT_QUEEN_URL = f"http://{LOOPBACK}:{QUEEN_PORT}"


@dataclass(frozen=True, slots=True)
class KeeperSettings:
    json: bool = False
    no_color: bool = False
    verbose: bool = False
    queen_url: str = DEFAULT_QUEEN_URL

    @classmethod
    def build(
        cls, *, json: bool, no_color: bool, verbose: bool, queen_url: str | None
    ) -> KeeperSettings:
        """Flag > RBEE_QUEEN_URL > the URL this RBEE_HOME's queen pidfile records > default.

        The pidfile is how `keeper status` finds a queen started with `--port`. NO_COLOR
        (any value) counts as --no-color.
        """
        url = (
            queen_url or os.environ.get(QUEEN_URL_ENV) or _started_queen_url() or DEFAULT_QUEEN_URL
        )
        return cls(
            json=json,
            no_color=no_color or "NO_COLOR" in os.environ,
            verbose=verbose,
            queen_url=url.rstrip("/"),
        )

    def output_mode(self, *, is_terminal: bool) -> OutputMode:
        """JSON when asked; the live view only on a terminal with colour allowed."""
        if self.json:
            return "json"
        if is_terminal and not self.no_color and os.environ.get("TERM") != "dumb":
            return "live"
        return "plain"

    def token(self, flag: str | None = None) -> str | None:
        """The bearer token: `flag` (--token) > RBEE_TOKEN > none. Empty means none.

        Raises:
            UsageError: the token is only whitespace (an unset variable in a script, a
                stray quote), which would otherwise pass as a token nobody can present.
        """
        token = flag if flag is not None else os.environ.get(TOKEN_ENV)
        if not token:
            return None
        if not token.strip():
            raise UsageError(
                f"the token (--token or {TOKEN_ENV}) is only whitespace; "
                "set a real token or unset it"
            )
        return token


def _started_queen_url() -> str | None:
    """The URL recorded by the queen this RBEE_HOME started, if its pidfile is there."""
    from daemons import QUEEN, recorded_url  # the pidfile module alone (daemons is lazy)

    return recorded_url(RbeePaths.resolve().run, QUEEN)


def check_home() -> None:
    """RBEE_HOME, when set, is a folder or can become one; a file there (or above it) fails
    here with a usage error, not later as a traceback from the first file read under it."""
    from pathlib import Path

    home = os.environ.get(HOME_ENV)
    if not home:
        return
    path = Path(home).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise UsageError(f"{HOME_ENV} {home} is not a folder{where}; point it at a folder")


def check_queen_url(flag: str | None) -> None:
    """The queen URL from `--queen-url` (else RBEE_QUEEN_URL) is http(s)://host[:port];
    anything else fails here, with a usage error, not later as "unreachable"."""
    if flag is not None:
        _check_url(flag, "--queen-url")
    elif env_url := os.environ.get(QUEEN_URL_ENV):
        _check_url(env_url, QUEEN_URL_ENV)


def _check_url(url: str, source: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        valid = False
    if not valid:
        raise UsageError(
            f"{source} {url!r} is not a URL; give the queen's address like http://127.0.0.1:7833"
        )
