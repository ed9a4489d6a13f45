"""Which machine a hive alias names, for the keeper: the lifecycle library's reading of the
hives config and the SSH config (`daemons.resolve`), its errors made usage errors (exit 2).

An alias resolves, in order: `localhost` (always this machine), a `[hives.ALIAS]` entry in
the hives config (`<config>/hives.toml`, shared with the queen), then a `Host ALIAS` entry
in the SSH config. The keys are the library's (`daemons._hosts`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import daemons
from daemons import (
    LOCAL,
    HiveHost,
    config_path,
    known_hosts_path,
    sample_entry,
    ssh_config_aliases,
    ssh_config_path,
)
from keeper.errors import UsageError

__all__ = [
    "LOCAL",
    "HiveHost",
    "config_path",
    "configured_hosts",
    "known_hosts_path",
    "resolve",
    "sample_entry",
    "ssh_config_aliases",
    "ssh_config_path",
]


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    try:
        yield
    except daemons.HostConfigError as exc:
        raise UsageError(str(exc)) from exc


def resolve(alias: str) -> HiveHost:
    """The machine `alias` names. Raises UsageError (with a sample entry) when unknown."""
    with _usage_errors():
        return daemons.resolve(alias)


def configured_hosts() -> list[HiveHost]:
    """localhost, then every hives config entry (what `hive list` shows)."""
    with _usage_errors():
        return daemons.configured_hosts()
