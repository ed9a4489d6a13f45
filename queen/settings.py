"""queen-rbee's settings: built once at the entry point and passed down.

Precedence: command-line flag > RBEE_* environment > default. Folders come from
`jobs.paths` (RBEE_HOME or the platform's folders).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobs.eventlog import FLUSH_INTERVAL_S
from jobs.paths import HIVE_PORT, LOOPBACK, QUEEN_PORT, TOKEN_ENV, RbeePaths
from jobs.service import Retention
from jobs.sse import KEEPALIVE_S
from queen.errors import QueenConfigError

LOCAL_HIVE_URL = f"http://{LOOPBACK}:{HIVE_PORT}"  # the hive on the queen's own machine


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class QueenSettings:
    """Everything the queen needs to serve; `paths` must exist (`RbeePaths.ensure()`)."""

    paths: RbeePaths
    port: int = QUEEN_PORT
    bind: str = LOOPBACK
    token: str | None = None
    hives: Mapping[str, str] = field(default_factory=lambda: {"localhost": LOCAL_HIVE_URL})
    keepalive_s: float = KEEPALIVE_S
    flush_interval_s: float = FLUSH_INTERVAL_S
    retention: Retention = field(default_factory=Retention)

    @classmethod
    def build(
        cls,
        *,
        port: int = QUEEN_PORT,
        bind: str = LOOPBACK,
        token: str | None = None,
        hives: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        paths: RbeePaths | None = None,
    ) -> QueenSettings:
        """Settings from flags and environment; raises QueenConfigError when unsafe."""
        env = os.environ if env is None else env
        token = token or env.get(TOKEN_ENV) or None
        if not is_loopback(bind) and not token:
            raise QueenConfigError(
                f"refusing to listen on {bind} without a token; pass --token or set "
                f"{TOKEN_ENV}, or bind {LOOPBACK}"
            )
        known = {"localhost": LOCAL_HIVE_URL}
        for spec in hives or []:
            hive_id, sep, url = spec.partition("=")
            if not sep or not hive_id or not url.startswith(("http://", "https://")):
                raise QueenConfigError(
                    f"--hive {spec!r} is not ID=URL; write e.g. --hive gpu1=http://10.0.0.5:{HIVE_PORT}"
                )
            known[hive_id] = url.rstrip("/")
        return cls(
            paths=(paths or RbeePaths.resolve()).ensure(),
            port=port,
            bind=bind,
            token=token,
            hives=known,
        )
