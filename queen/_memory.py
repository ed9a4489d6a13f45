"""Placement by memory: start a worker on the hive with the most free memory that fits it.

A model's need is estimated from what the queen can know before loading it: its GGUF file
size (from a hive's `model_list`) with a margin for llama.cpp's buffers, plus its KV cache
(context × slots), taken from a worker of the same model that already runs (its beat
reports `kv_bytes`), else guessed as a share of the weights. Hives report their free
memory in their beats, and what they lend (`--lend-memory`): placement uses the smaller.
A hive that reports none is never refused (nothing to compare); when some do and none
fits, the request is refused in one sentence naming the model, its estimate and the
largest free space. `spread` (the default, RBEE_PLACEMENT) puts a model's workers on
different hives, the roomiest first; `pack` fills the tightest hive that fits first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from jobs import InvalidRequest

WEIGHTS_MARGIN = 1.1  # llama.cpp's compute buffers and the process itself, over the file
KV_SHARE = 0.25  # KV cache guessed as this share of the weights when no worker reports it
MIB = 1 << 20
Placement = Literal["spread", "pack"]  # RBEE_PLACEMENT: across hives, or fill one first
PLACEMENTS: tuple[Placement, ...] = ("spread", "pack")


@dataclass(frozen=True, slots=True)
class Room:
    """A hive that could start the worker, and its free memory (None: not reported)."""

    hive_id: str
    free_bytes: int | None


def lendable(free_bytes: int | None, lend_bytes: int | None) -> int | None:
    """What placement may use on a hive: its free memory, capped by what it lends
    (`keeper hive start NAME --lend-memory SIZE`); None when it reports neither."""
    if lend_bytes is None:
        return free_bytes
    return lend_bytes if free_bytes is None else min(free_bytes, lend_bytes)


def estimate(size_bytes: int | None, *, kv_bytes: int | None = None) -> int | None:
    """Bytes a worker of a model with this file size needs, or None when the size is
    unknown (the model is not in any catalog yet)."""
    if size_bytes is None:
        return None
    kv = kv_bytes if kv_bytes is not None else int(size_bytes * KV_SHARE)
    return int(size_bytes * WEIGHTS_MARGIN) + kv


def roomiest(
    rooms: Sequence[Room],
    need: int | None,
    model: str,
    *,
    placement: Placement = "spread",
    load: Mapping[str, int] | None = None,
) -> Room | None:
    """The room to start the worker in, among those with free memory that fits `need`:
    `spread` takes the one with the fewest workers of the model (`load`, by hive), then
    the most free memory; `pack` the one with the least free memory that still fits (the
    others stay free for bigger models). None when no hive reports its memory (or the
    need is unknown): placement cannot choose by memory. Raises InvalidRequest (503) when
    hives report memory and none has room."""
    known = [r for r in rooms if r.free_bytes is not None]
    if not known or need is None:
        return None
    fits = [r for r in known if (r.free_bytes or 0) >= need]
    if not fits:
        if len(known) < len(rooms):
            return None  # a hive that reports nothing may have room
        best = max(known, key=lambda r: r.free_bytes or 0)
        raise InvalidRequest(  # 503: it may fit once a worker stops
            f"{model} needs about {_mib(need)} of memory and the most any hive has free is "
            f"{_mib(best.free_bytes or 0)} (hive {best.hive_id}); stop a worker "
            "(`keeper worker stop`) or start a hive on a bigger machine",
            detail={"model": model, "need_bytes": need, "largest_free_bytes": best.free_bytes},
            status=503,
        )
    load = load or {}
    if placement == "pack":
        return min(fits, key=lambda r: (r.free_bytes or 0, r.hive_id))
    return min(fits, key=lambda r: (load.get(r.hive_id, 0), -(r.free_bytes or 0), r.hive_id))


def choose_device(gpu_free: Mapping[str, int], need: int | None) -> str:
    """The device a new worker runs on: the GPU with the most free VRAM when the model
    fits there (its hive reports only GPUs its workers' build can offload to), else the
    CPU (an unknown need never goes to a GPU: it might not fit)."""
    if need is None:
        return "cpu"
    fits = [(free, device) for device, free in gpu_free.items() if free >= need]
    return max(fits)[1] if fits else "cpu"


def _mib(size: int) -> str:
    return f"{size / MIB:,.0f} MiB"
