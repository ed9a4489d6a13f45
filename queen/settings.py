"""queen-rbee's settings: built once at the entry point and passed down.

Precedence: command-line flag > RBEE_* environment > hives config > default. Folders come
from `jobs.RbeePaths` (RBEE_HOME or the platform's folders).

The hives config (`<config>/hives.toml`, shared with the keeper) gives each hive its URL
and its own token; the queen never sends its own token upstream:

    [hives.gpu1]
    url = "http://10.0.0.5:7835"
    token = "the token gpu1 was started with"   # omit for a hive on loopback
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobs import (
    HIVE_PORT,
    HIVES_CONFIG,
    ID_PATTERN,
    LOOPBACK,
    QUEEN_PORT,
    TOKEN_ENV,
    RbeePaths,
    is_loopback,
)
from jobs.server import (
    BODY_READ_TIMEOUT_S,
    FLUSH_INTERVAL_S,
    KEEPALIVE_S,
    MAX_BODY_BYTES,
    MAX_BODY_ENV,
    Retention,
)
from queen._admission import MAX_QUEUE
from queen._keepalive import KEEP_ALIVE_S
from queen._memory import PLACEMENTS, Placement
from queen.errors import QueenConfigError

LOCAL_HIVE_URL = f"http://{LOOPBACK}:{HIVE_PORT}"  # the hive on the queen's own machine
LOCAL_HIVE_PIDFILE = "hive-localhost.pid"  # the keeper's pidfile of that hive, in `run`
WATCH_IDLE_S = 60.0  # a status watch nobody has read for this long ends (a crashed client)
# The OpenAI door ends a generation still running this long after a worker took it (504);
# RBEE_GENERATION_TIMEOUT_S sets it, 0 for none. Waiting for a worker does not count.
GENERATION_TIMEOUT_S = 600.0
GENERATION_TIMEOUT_ENV = "RBEE_GENERATION_TIMEOUT_S"
MAX_QUEUE_ENV = "RBEE_MAX_QUEUE"  # requests per model that may wait for a slot
KEEP_ALIVE_ENV = "RBEE_KEEP_ALIVE"  # idle time before a worker is stopped: 300, 5m, 1h, never
DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}  # suffixes RBEE_KEEP_ALIVE accepts
PLACEMENT_ENV = "RBEE_PLACEMENT"  # spread (a model's workers over the hives) or pack


@dataclass(frozen=True, slots=True)
class QueenSettings:
    """Everything the queen needs to serve; `paths` must exist (`RbeePaths.ensure()`)."""

    paths: RbeePaths
    port: int = QUEEN_PORT
    bind: str = LOOPBACK
    token: str | None = None
    hives: Mapping[str, str] = field(default_factory=lambda: {"localhost": LOCAL_HIVE_URL})
    hive_tokens: Mapping[str, str] = field(default_factory=dict)  # hive id -> its own token
    # Hives known by default only (this machine's `localhost`, unless configured): the
    # queen calls one only once it has beaten (queen.hives.HiveRegistry.reachable).
    implicit_hives: frozenset[str] = frozenset()
    max_body_bytes: int = MAX_BODY_BYTES
    body_read_timeout_s: float = BODY_READ_TIMEOUT_S
    keepalive_s: float = KEEPALIVE_S
    flush_interval_s: float = FLUSH_INTERVAL_S
    retention: Retention = field(default_factory=Retention)
    watch_idle_s: float = WATCH_IDLE_S
    generation_timeout_s: float | None = GENERATION_TIMEOUT_S  # None: no limit
    max_queue: int = MAX_QUEUE  # requests per model waiting for a slot; one more gets 503
    keep_alive_s: float | None = KEEP_ALIVE_S  # idle workers stop after this; None: never
    placement: Placement = "spread"  # where new workers go: spread over hives, or pack

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
        if token is not None and not token.strip():
            raise QueenConfigError(
                f"the token (--token or {TOKEN_ENV}) is only whitespace; set a real token"
            )
        if not is_loopback(bind) and not token:
            raise QueenConfigError(
                f"refusing to listen on {bind} without a token; pass --token or set "
                f"{TOKEN_ENV}, or bind {LOOPBACK}"
            )
        paths = (paths or RbeePaths.resolve()).ensure()
        configured, hive_tokens = read_hives_config(paths.config / HIVES_CONFIG)
        known = {"localhost": local_hive_url(paths), **configured}
        implicit = {"localhost"} - set(configured)
        for spec in hives or []:
            hive_id, sep, url = spec.partition("=")
            if not sep or not hive_id or not url.startswith(("http://", "https://")):
                raise QueenConfigError(
                    f"--hive {spec!r} is not ID=URL; write e.g. --hive gpu1=http://10.0.0.5:{HIVE_PORT}"
                )
            known[hive_id] = url.rstrip("/")
            implicit.discard(hive_id)
        return cls(
            paths=paths,
            port=port,
            bind=bind,
            token=token,
            hives=known,
            hive_tokens=hive_tokens,
            implicit_hives=frozenset(implicit),
            max_body_bytes=_positive_int(env, MAX_BODY_ENV, MAX_BODY_BYTES),
            max_queue=_queue_bound(env),
            keep_alive_s=_keep_alive(env),
            generation_timeout_s=_generation_timeout(env),
            placement=_placement(env),
        )


def local_hive_url(paths: RbeePaths) -> str:
    """Where this RBEE_HOME's local hive listens, until its first beat says so itself: the
    URL in its pidfile (`keeper hive start` writes it; a hive beside a queen on another
    port is not on 7835), else the default port. A queen restarted beside a running hive
    would otherwise send it jobs at the default port until its next beat, which a hive
    backing off from the queen's absence may send only 30 s later."""
    try:
        url = json.loads((paths.run / LOCAL_HIVE_PIDFILE).read_text(encoding="utf-8"))["url"]
        parts = urlsplit(url)
        local = parts.scheme == "http" and is_loopback(parts.hostname or "") and parts.port
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return LOCAL_HIVE_URL
    return str(url).rstrip("/") if local else LOCAL_HIVE_URL  # this machine's, nothing else


def read_hives_config(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(hive id -> URL, hive id -> token) from the hives config; no file means no hives.

    Keys the queen does not use (the keeper's `host`, `ssh_user`, ...) are ignored; a hive
    without `url` is reached once its heartbeats say where. Raises QueenConfigError.
    """
    section = _hives_section(path)
    if not isinstance(section, dict):
        raise QueenConfigError(f"{path}: `hives` must be a table of [hives.ID] sections")
    urls: dict[str, str] = {}
    tokens: dict[str, str] = {}
    for hive_id, entry in section.items():
        where = f"{path} [hives.{hive_id}]"
        if not isinstance(entry, dict) or not re.fullmatch(ID_PATTERN, hive_id):
            raise QueenConfigError(
                f"{where} is not a hive: name it with letters, digits, '.', '_' or '-' "
                "and give it keys such as url and token"
            )
        url = _str_key(entry, "url", where)
        if url is not None:
            if not url.startswith(("http://", "https://")):
                raise QueenConfigError(
                    f"{where} url {url!r} is not an http(s) URL; "
                    f'write e.g. url = "http://10.0.0.5:{HIVE_PORT}"'
                )
            urls[hive_id] = url.rstrip("/")
        token = _str_key(entry, "token", where)
        if token is not None:
            if not token.strip():
                raise QueenConfigError(f"{where} token is empty; set the hive's token or drop it")
            tokens[hive_id] = token
    return urls, tokens


@dataclass(frozen=True, slots=True)
class LinkHost:
    """How another hive's machine reaches a hive's sshd for a split's SSH link, as the
    hives config says: `link_host` (given for that purpose), the keeper's `host` (which
    may be an SSH config alias only the keeper knows), and `link_port` else `port`; None
    where it says nothing."""

    link_host: str | None = None
    host: str | None = None
    port: int | None = None


def read_link_hosts(path: Path) -> dict[str, LinkHost]:
    """hive id -> its sshd as peers reach it, from the hives config (read afresh for each
    split, so an edit needs no restart). Raises QueenConfigError for a malformed entry."""
    section = _hives_section(path)
    found: dict[str, LinkHost] = {}
    for hive_id, entry in section.items() if isinstance(section, dict) else ():
        if not isinstance(entry, dict):
            continue
        where = f"{path} [hives.{hive_id}]"
        link_host = _str_key(entry, "link_host", where)
        host = _str_key(entry, "host", where)
        port = entry.get("link_port", entry.get("port"))
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
        ):
            raise QueenConfigError(f"{where} link_port must be a TCP port number (1-65535)")
        found[hive_id] = LinkHost(link_host, host, port)
    return found


def _hives_section(path: Path) -> object:
    """The `hives` value of the hives config as written ({} when there is no file), for
    each reader to check; raises QueenConfigError for a file that cannot be read."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise QueenConfigError(
            f"cannot read the hives config {path} ({exc}); fix or remove it"
        ) from None
    return data.get("hives", {})


def _str_key(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise QueenConfigError(f"{where} {key} must be a string")
    return value


def _queue_bound(env: Mapping[str, str]) -> int:
    raw = env.get(MAX_QUEUE_ENV)
    if raw is None or raw == "":
        return MAX_QUEUE
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise QueenConfigError(
            f"{MAX_QUEUE_ENV}={raw!r} is not a positive whole number of requests; "
            f"set it to e.g. {MAX_QUEUE}"
        )
    return int(raw)


def _placement(env: Mapping[str, str]) -> Placement:
    raw = (env.get(PLACEMENT_ENV) or "").strip().lower()
    if not raw:
        return "spread"
    for placement in PLACEMENTS:
        if raw == placement:
            return placement
    raise QueenConfigError(
        f"{PLACEMENT_ENV}={raw!r} is not a placement; set it to spread (a model's workers "
        "on different hives) or pack (fill one hive first)"
    )


def _keep_alive(env: Mapping[str, str]) -> float | None:
    raw = (env.get(KEEP_ALIVE_ENV) or "").strip().lower()
    if not raw:
        return KEEP_ALIVE_S
    if raw == "never":
        return None
    number, scale = raw, 1.0
    if raw[-1] in DURATION_UNITS:
        number, scale = raw[:-1], DURATION_UNITS[raw[-1]]
    try:
        seconds = float(number) * scale
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise QueenConfigError(
            f"{KEEP_ALIVE_ENV}={raw!r} is not a duration; write seconds or 5m, 1h, "
            "or never to keep idle workers"
        )
    return seconds


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise QueenConfigError(f"{name}={raw!r} is not a positive whole number of bytes")
    return int(raw)


def _generation_timeout(env: Mapping[str, str]) -> float | None:
    raw = env.get(GENERATION_TIMEOUT_ENV)
    if raw is None or raw == "":
        return GENERATION_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise QueenConfigError(
            f"{GENERATION_TIMEOUT_ENV}={raw!r} is not a number of seconds; "
            "give e.g. 600, or 0 for no limit"
        )
    return seconds or None
