"""The hives the queen knows: id -> base URL, from configuration for now, and each
hive's own token (from the hives config; the queen's inbound token never goes upstream).

Heartbeats (hives announcing themselves and their workers) land with the hive issue and
will update this same registry; a restarted queen re-learns them from the next beats.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from queen.errors import UnknownHive


@dataclass(slots=True)
class Hive:
    id: str
    url: str
    source: Literal["config", "heartbeat"] = "config"
    last_seen: float | None = None  # wall time of the last heartbeat or successful contact

    def to_dict(self) -> dict[str, Any]:
        return {
            "hive_id": self.id,
            "url": self.url,
            "source": self.source,
            "last_seen": self.last_seen,
        }


class HiveRegistry:
    """Known hives by id. Only the event loop touches it, so it takes no lock."""

    def __init__(
        self, hives: Mapping[str, str], *, tokens: Mapping[str, str] | None = None
    ) -> None:
        self._hives = {hive_id: Hive(hive_id, url) for hive_id, url in hives.items()}
        self._tokens = dict(tokens or {})  # by id, so a hive learned from beats gets its own

    def get(self, hive_id: str) -> Hive:
        """The hive called `hive_id`; raises UnknownHive."""
        hive = self._hives.get(hive_id)
        if hive is None:
            raise UnknownHive(hive_id, sorted(self._hives))
        return hive

    def token_for(self, hive_id: str) -> str | None:
        """The bearer token to send to `hive_id`, if its config gives one (else none)."""
        return self._tokens.get(hive_id)

    def all(self) -> list[Hive]:
        return sorted(self._hives.values(), key=lambda h: h.id)

    def seen(self, hive_id: str) -> None:
        self.get(hive_id).last_seen = time.time()
