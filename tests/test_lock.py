"""The environment the suite runs in is the one uv.lock names, version for version."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def test_every_installed_dependency_is_the_locked_version() -> None:
    """`make install` (uv sync --locked) installs exactly the lock: every package of the
    lock that is installed has the locked version, and the key ones are all there."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked: dict[str, set[str]] = {}  # a package may be locked per Python version
    for package in lock["package"]:
        if "version" in package:
            locked.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {
        name: (installed[name], sorted(versions))
        for name, versions in locked.items()
        if name in installed and installed[name] not in versions
    }
    assert wrong == {}, f"installed vs locked: {wrong}; run `make install`"
    for name in ("typer", "asyncssh", "cryptography", "llama-cpp-python", "uvicorn", "pip"):
        assert name in installed and name in locked, name
