"""Fixtures for keeper tests: scripts for real child processes, on the asyncio backend."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Keeper runs anyio on asyncio (asyncssh needs it), so its tests do too."""
    return "asyncio"


@pytest.fixture
def write_script(tmp_path: Path) -> Callable[[str], list[str]]:
    """Write a Python script to tmp_path and return the argv that runs it."""
    counter = iter(range(1_000_000))

    def write(body: str) -> list[str]:
        path = tmp_path / f"child{next(counter)}.py"
        path.write_text(textwrap.dedent(body))
        return [sys.executable, str(path)]

    return write
