"""What each daemon is: its name (pidfile, lock, log), its program, its argv and env.

The one copy of the queen's and the hive's command lines and environments, for the
keeper and the queen alike. The queen's token travels in its environment, never argv
(argv shows in `ps`); a hive gets its credential (RBEE_HIVE_CREDENTIAL, derived from the
cluster secret of this RBEE_HOME, jobs._credentials) in its environment and never the
user's RBEE_TOKEN.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from daemons._host import Daemon
from daemons._pidfile import HIVE_PROGRAM, QUEEN, QUEEN_PROGRAM, hive_daemon_name
from jobs import (
    HIVE_CREDENTIAL_ENV,
    LOOPBACK,
    TOKEN_ENV,
    RbeePaths,
    cluster_secret,
    hive_credential,
)


def hive_argv(
    command: list[str],
    alias: str,
    *,
    port: int,
    bind: str,
    queen_url: str,
    beat_interval: float | None = None,
    lend_bytes: int | None = None,
) -> list[str]:
    """`command` (`python -m hive`, or a venv's `rbee-hive`) with the hive's options: the
    one copy of the hive's command line, local and remote. `lend_bytes`: the most memory
    the queen's placement may use there (`--lend-memory`)."""
    argv = [
        *command,
        *("--hive-id", alias, "--port", str(port)),
        *("--bind", bind, "--queen-url", queen_url),
    ]
    if beat_interval is not None:
        argv += ["--beat-interval", f"{beat_interval:g}"]
    if lend_bytes is not None:
        argv += ["--lend-memory", str(lend_bytes)]
    return argv


def hive_env(paths: RbeePaths, alias: str, base: Mapping[str, str]) -> dict[str, str]:
    """`base` without the user's token, with the hive's own credential."""
    env = dict(base)
    env.pop(TOKEN_ENV, None)  # the queen's token is not the hive's own
    env[HIVE_CREDENTIAL_ENV] = hive_credential(cluster_secret(paths), alias)
    return env


def local_hive(
    paths: RbeePaths,
    alias: str,
    *,
    port: int,
    queen_url: str,
    beat_interval: float | None = None,
    env: Mapping[str, str] | None = None,
    lend_bytes: int | None = None,
) -> Daemon:
    """The hive `alias` on this machine, on loopback `port`, logging into this home."""
    name = hive_daemon_name(alias)
    argv = hive_argv(
        [sys.executable, "-m", "hive"],
        alias,
        port=port,
        bind=LOOPBACK,
        queen_url=queen_url,
        beat_interval=beat_interval,
        lend_bytes=lend_bytes,
    )
    return Daemon(
        name,
        HIVE_PROGRAM,
        argv,
        f"http://{LOOPBACK}:{port}",
        paths.logs / f"{name}.log",
        hive_env(paths, alias, os.environ if env is None else env),
    )


def local_queen(
    paths: RbeePaths,
    *,
    port: int,
    bind: str,
    url: str,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Daemon:
    """The queen of this home on `bind`:`port`, reached here at `url`."""
    argv = [sys.executable, "-m", "queen", "--port", str(port), "--bind", bind]
    child_env = dict(os.environ if env is None else env)
    if token:
        child_env[TOKEN_ENV] = token
    return Daemon(QUEEN, QUEEN_PROGRAM, argv, url, paths.logs / f"{QUEEN}.log", child_env)
