"""The rbee version every program reports (servers' /health and /openapi.json, `keeper
--version`), from the installed distribution; a module of its own so the keeper can
ask without loading the server stack."""

from __future__ import annotations


def rbee_version() -> str:
    """The installed rbee distribution's version (every program reports the same one)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rbee")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"
