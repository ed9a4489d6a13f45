"""The lifecycle library's errors: one root, a leaf per thing the caller does about it.

    DaemonError        something about a daemon the user can act on; str() says what
    ├── StartFailed    it did not start (exited early, never healthy, disk full)
    │   └── PortTaken  its port is held by another program or another home's daemon
    ├── CannotBind     the address asked for cannot be listened on at all
    ├── HostConfigError  a hive alias names no machine, or its entry is malformed
    └── SshError       a hive's machine could not be reached, trusted or used over SSH

The keeper maps them to its exit codes (keeper.errors) at its boundary; the queen fails
the job with the same sentence.
"""

from __future__ import annotations


class DaemonError(Exception):
    """Something about starting, stopping or finding a daemon; `str(err)` is one sentence."""


class StartFailed(DaemonError):
    """The daemon did not start, or was stopped because it never became healthy."""


class PortTaken(StartFailed):
    """The daemon's port is held by something else; the sentence names who and a free port."""


class CannotBind(DaemonError):
    """The address a daemon is to listen on is not one of this machine's."""


class HostConfigError(DaemonError):
    """A hive alias is not configured, or its hives config entry cannot be used."""


class SshError(DaemonError):
    """The hive's machine could not be reached, trusted or used over SSH."""
