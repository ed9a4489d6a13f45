"""Fixtures every test folder shares."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """The keeper runs anyio on asyncio (asyncssh needs it), so the tests do too."""
    return "asyncio"


@pytest.fixture(autouse=True)
def rbee_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own RBEE_HOME, so nothing touches the user's folders."""
    home = tmp_path_factory.mktemp("rbee-home")
    monkeypatch.setenv("RBEE_HOME", str(home))
    return home


@pytest.fixture
def keeper(rbee_home):
    """Run the real keeper CLI as a subprocess, as a user or a CI script would."""
    return KeeperRunner(rbee_home)


class KeeperRunner:
    """`keeper(...)` runs `python -m keeper ARGS` with RBEE_HOME set and returns the result."""

    def __init__(self, home) -> None:
        self.home = home

    def env(self) -> dict[str, str]:
        import os

        env = dict(os.environ)
        env["RBEE_HOME"] = str(self.home)
        env.pop("RBEE_QUEEN_URL", None)
        env.pop("RBEE_TOKEN", None)
        env["NO_COLOR"] = "1"
        return env

    def __call__(self, *args: str, timeout: float = 60.0):
        import subprocess
        import sys

        return subprocess.run(
            [sys.executable, "-m", "keeper", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
