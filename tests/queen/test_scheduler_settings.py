"""The queue's bound comes from RBEE_MAX_QUEUE, refused in one sentence when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import RbeePaths
from queen._admission import MAX_QUEUE
from queen.errors import QueenConfigError
from queen.settings import QueenSettings


def test_rbee_max_queue_sets_the_bound_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    """Unset gives the default; a number sets it; 0 or a word stops the queen, naming it."""
    paths = RbeePaths.resolve(tmp_path)
    assert QueenSettings.build(paths=paths, env={}).max_queue == MAX_QUEUE
    assert QueenSettings.build(paths=paths, env={"RBEE_MAX_QUEUE": "3"}).max_queue == 3
    for bad in ("0", "many"):
        with pytest.raises(QueenConfigError, match="RBEE_MAX_QUEUE"):
            QueenSettings.build(paths=paths, env={"RBEE_MAX_QUEUE": bad})
