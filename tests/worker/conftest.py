"""Fixtures of the worker tests that need a real chat model."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from hive.smollm2 import fetch_smollm2
from tests.support import RunningProgram, spawn_worker


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """builtin:smollm2's GGUF, fetched once for the session as the hive fetches it."""
    dest = tmp_path_factory.mktemp("smollm2") / "smollm2.gguf"
    anyio.run(functools.partial(fetch_smollm2, dest, label="builtin:smollm2"))
    return dest


@pytest.fixture
async def chat_worker(rbee_home: Path, smollm2: Path) -> AsyncIterator[RunningProgram]:
    """A real worker serving builtin:smollm2, ready for prompts."""
    async with spawn_worker(rbee_home, smollm2) as running:
        await running.wait_action("ready")
        yield running
