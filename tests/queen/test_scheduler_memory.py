"""Placement by memory, without processes: a model's estimate and the hive it goes to."""

from __future__ import annotations

import pytest

from jobs import InvalidRequest
from queen._memory import KV_SHARE, MIB, WEIGHTS_MARGIN, Room, estimate, roomiest

GIB = 1 << 30


def test_the_estimate_is_the_weights_with_a_margin_plus_the_kv_cache() -> None:
    """A worker's reported KV cache is used as is; without one, a share of the weights."""
    assert estimate(GIB, kv_bytes=512 * MIB) == int(GIB * WEIGHTS_MARGIN) + 512 * MIB
    assert estimate(GIB) == int(GIB * WEIGHTS_MARGIN) + int(GIB * KV_SHARE)
    assert estimate(None) is None  # not in any catalog yet: nothing to go by


def test_the_hive_with_the_most_free_memory_that_fits_is_chosen() -> None:
    """The roomiest hive wins; hives that report nothing leave the choice to the old rule."""
    rooms = [Room("a", 2 * GIB), Room("b", 6 * GIB), Room("c", 4 * GIB)]
    assert roomiest(rooms, 3 * GIB, "m") == Room("b", 6 * GIB)
    assert roomiest([Room("a", None)], 3 * GIB, "m") is None
    assert roomiest(rooms, None, "m") is None
    # one hive does not say: it might fit there, so nothing is refused
    assert roomiest([Room("a", GIB), Room("b", None)], 3 * GIB, "m") is None


def test_a_model_that_fits_nowhere_is_refused_naming_its_need_and_the_largest_room() -> None:
    """When every hive reports and none has room: 503, one sentence with the model, its
    estimate and the largest free space, and what to do."""
    with pytest.raises(InvalidRequest) as refused:
        roomiest([Room("a", GIB), Room("b", 2 * GIB)], 3 * GIB, "hf:big/model.gguf")
    message = str(refused.value)
    assert refused.value.status == 503
    assert "hf:big/model.gguf needs about 3,072 MiB" in message
    assert "2,048 MiB (hive b)" in message and "keeper worker stop" in message
