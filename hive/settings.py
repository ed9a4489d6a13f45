"""rbee-hive's settings: built once at the entry point and passed down.

Precedence: command-line flag > RBEE_* environment > default. `--lend-memory` /
RBEE_LEND_MEMORY caps what the queen's placement may use on this machine; RBEE_KNOWN_HOSTS and
RBEE_AUTHORIZED_KEYS point a split's SSH links elsewhere than ~/.ssh. Folders come from
`jobs.RbeePaths` (RBEE_HOME or the platform's folders); the hive keeps its jobs in its own
state subfolder, so a queen and a hive can share one RBEE_HOME.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hive.errors import HiveConfigError
from jobs import (
    BEAT_INTERVAL_S,
    HIVE_CREDENTIAL_ENV,
    HIVE_PORT,
    LEND_MEMORY_ENV,
    LOOPBACK,
    TOKEN_ENV,
    RbeePaths,
    cluster_secret,
    hive_credential,
    is_loopback,
    parse_size,
)

HIVE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # the operations' id alphabet
DEFAULT_HIVE_ID = "localhost"  # the hive on the queen's own machine
WORKER_READY_TIMEOUT_S = 120.0  # a large model on a slow disk takes a while to load
# SSH links of a split (docs/splitting.md): the known_hosts this hive checks a peer's host
# key against, and the authorized_keys its own sshd reads for this hive's user, where it
# grants a peer's link key one forward to its RPC server.
KNOWN_HOSTS_ENV = "RBEE_KNOWN_HOSTS"  # as the keeper's (daemons._hosts)
AUTHORIZED_KEYS_ENV = "RBEE_AUTHORIZED_KEYS"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_AUTHORIZED_KEYS = "~/.ssh/authorized_keys"


@dataclass(frozen=True, slots=True)
class HiveSettings:
    """Everything the hive needs to serve; `paths` must exist (`RbeePaths.ensure()`)."""

    paths: RbeePaths
    hive_id: str = DEFAULT_HIVE_ID
    port: int = HIVE_PORT
    bind: str = LOOPBACK
    token: str | None = None  # the user's token (RBEE_TOKEN), required beyond loopback
    queen_url: str | None = None  # None: no heartbeats (a hive serving on its own)
    # The queen <-> hive hop's credential (jobs._credentials): signs the beats, admits the
    # queen's calls and derives each worker's own. Never handed to a worker.
    credential: str = ""
    beat_interval_s: float = BEAT_INTERVAL_S
    worker_ready_timeout_s: float = WORKER_READY_TIMEOUT_S
    # The most of this machine's memory the queen's placement may use (a worker, or a share
    # of a split), reported in the beats; None: all that is free.
    lend_bytes: int | None = None
    known_hosts: Path = field(default_factory=lambda: Path(DEFAULT_KNOWN_HOSTS).expanduser())
    authorized_keys: Path = field(
        default_factory=lambda: Path(DEFAULT_AUTHORIZED_KEYS).expanduser()
    )

    @property
    def link_home(self) -> Path:
        """Where this hive's RPC link key lives (`keys/rpc-link`, hive/_rpc_link.py)."""
        return self.paths.config

    @property
    def state_dir(self) -> Path:
        """The hive's job registry and logs (apart from a queen's in the same RBEE_HOME)."""
        return self.paths.state / f"hive-{self.hive_id}"

    @property
    def models_dir(self) -> Path:
        """The catalog: catalog.json and the model files it owns."""
        return self.paths.models / self.hive_id

    @property
    def worker_logs(self) -> Path:
        return self.paths.logs / "workers"

    @classmethod
    def build(
        cls,
        *,
        hive_id: str = DEFAULT_HIVE_ID,
        port: int = HIVE_PORT,
        bind: str = LOOPBACK,
        token: str | None = None,
        queen_url: str | None = None,
        beat_interval_s: float = BEAT_INTERVAL_S,
        lend_memory: str | None = None,
        env: Mapping[str, str] | None = None,
        paths: RbeePaths | None = None,
    ) -> HiveSettings:
        """Settings from flags and environment; raises HiveConfigError when unsafe."""
        env = os.environ if env is None else env
        token = (token or env.get(TOKEN_ENV) or "").strip() or None
        if not is_loopback(bind) and not token:
            raise HiveConfigError(
                f"refusing to listen on {bind} without a token; pass --token or set "
                f"{TOKEN_ENV}, or bind {LOOPBACK}"
            )
        if not HIVE_ID_PATTERN.match(hive_id):
            raise HiveConfigError(
                f"--hive-id {hive_id!r} is not a valid id; use letters, digits, '.', '_' or '-'"
            )
        if queen_url is not None and not queen_url.startswith(("http://", "https://")):
            raise HiveConfigError(
                f"--queen-url {queen_url!r} is not an http(s) URL; write e.g. "
                "--queen-url http://127.0.0.1:7833"
            )
        if beat_interval_s <= 0:
            raise HiveConfigError("--beat-interval must be a positive number of seconds")
        lend = lend_memory if lend_memory is not None else env.get(LEND_MEMORY_ENV)
        try:
            lend_bytes = None if lend is None or not lend.strip() else parse_size(lend)
        except ValueError as exc:
            raise HiveConfigError(str(exc)) from None
        paths = (paths or RbeePaths.resolve()).ensure()
        # From the keeper (environment, or SSH's stdin for a remote hive); a hive started
        # by hand beside its queen derives it from the RBEE_HOME they share.
        credential = (env.get(HIVE_CREDENTIAL_ENV) or "").strip() or hive_credential(
            cluster_secret(paths), hive_id
        )
        known_hosts = env.get(KNOWN_HOSTS_ENV) or DEFAULT_KNOWN_HOSTS
        authorized_keys = env.get(AUTHORIZED_KEYS_ENV) or DEFAULT_AUTHORIZED_KEYS
        return cls(
            known_hosts=Path(known_hosts).expanduser(),
            authorized_keys=Path(authorized_keys).expanduser(),
            paths=paths,
            hive_id=hive_id,
            port=port,
            bind=bind,
            token=token,
            queen_url=queen_url.rstrip("/") if queen_url else None,
            credential=credential,
            beat_interval_s=beat_interval_s,
            lend_bytes=lend_bytes,
        )
