"""The `kit` fixture: the job-server helpers of tests.support (`JobsKit`) in one object."""

from __future__ import annotations

import pytest

from tests.support import JobsKit


@pytest.fixture
def kit() -> JobsKit:
    return JobsKit()
