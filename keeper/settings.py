"""The keeper's global options, built once from flags and environment and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from jobs.paths import LOOPBACK, QUEEN_PORT, QUEEN_URL_ENV

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
        """Flag > RBEE_QUEEN_URL > default; NO_COLOR (any value) counts as --no-color."""
        url = queen_url or os.environ.get(QUEEN_URL_ENV) or DEFAULT_QUEEN_URL
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
