"""The `queen` fixture: an in-process queen with default settings under the test's
RBEE_HOME (helpers to start queens are in tests.support: `start_queen`, `spawn_queen`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import RunningQueen, queen_settings, start_queen


@pytest.fixture
async def queen(rbee_home: Path) -> AsyncIterator[RunningQueen]:
    async with start_queen(queen_settings(rbee_home)) as running:
        yield running
