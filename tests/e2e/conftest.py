"""Fixtures the end-to-end files share: one queen and hive per module, and a slow model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hive.tiny_model import TinyShape, write_tiny_model
from tests.support import Chain


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """A queen and a hive started by the keeper on free ports under the module's own
    RBEE_HOME; every command names the queen. Both are stopped after the module."""
    made = Chain(tmp_path_factory.mktemp("infer-home"))
    made.start_queen()
    try:
        made.start_hive()
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model wide enough to generate slowly (2048-token context), as a local .gguf."""
    path = tmp_path_factory.mktemp("models") / "slow.gguf"
    # Wide enough that LONG's tokens take tens of seconds (~80 tok/s on 2 cores): the
    # worker no longer slows down as its answer grows, so a narrow model ends in a blink.
    write_tiny_model(path, shape=TinyShape(n_ctx=2048, n_embd=512, n_layer=8, n_ff=2048))
    return path
