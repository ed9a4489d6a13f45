"""Placement by memory: start a worker on the hive with the most free memory that fits it.

A model's need is estimated from what the queen can know before loading it: its GGUF file
size (from a hive's `model_list`) with a margin for llama.cpp's buffers, plus its KV cache
(context × slots), taken from a worker of the same model that already runs (its beat
reports `kv_bytes`), else guessed as a share of the weights. Hives report their free
memory in their beats. A hive that reports none is never refused (nothing to compare);
when some do and none fits, the request is refused in one sentence naming the model,
its estimate and the largest free space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jobs import InvalidRequest

WEIGHTS_MARGIN = 1.1  # llama.cpp's compute buffers and the process itself, over the file
KV_SHARE = 0.25  # KV cache guessed as this share of the weights when no worker reports it
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Room:
    """A hive that could start the worker, and its free memory (None: not reported)."""

    hive_id: str
    free_bytes: int | None


def estimate(size_bytes: int | None, *, kv_bytes: int | None = None) -> int | None:
    """Bytes a worker of a model with this file size needs, or None when the size is
    unknown (the model is not in any catalog yet)."""
    if size_bytes is None:
        return None
    kv = kv_bytes if kv_bytes is not None else int(size_bytes * KV_SHARE)
    return int(size_bytes * WEIGHTS_MARGIN) + kv


def roomiest(rooms: Sequence[Room], need: int | None, model: str) -> Room | None:
    """The room with the most free memory that fits `need`; None when no hive reports its
    memory (or the need is unknown): placement cannot choose by memory. Raises
    InvalidRequest (503) when hives report memory and none has room."""
    known = [r for r in rooms if r.free_bytes is not None]
    if not known or need is None:
        return None
    best = max(known, key=lambda r: r.free_bytes or 0)
    if (best.free_bytes or 0) < need and len(known) == len(rooms):
        raise InvalidRequest(  # 503: it may fit once a worker stops
            f"{model} needs about {_mib(need)} of memory and the most any hive has free is "
            f"{_mib(best.free_bytes or 0)} (hive {best.hive_id}); stop a worker "
            "(`keeper worker stop`) or start a hive on a bigger machine",
            detail={"model": model, "need_bytes": need, "largest_free_bytes": best.free_bytes},
            status=503,
        )
    return best if (best.free_bytes or 0) >= need else None


def _mib(size: int) -> str:
    return f"{size / MIB:,.0f} MiB"
