"""An 8-layer llama GGUF for split tests: builtin:tiny has only 2 layers, too few to
share among three hives with some layers each. Same writer, same vocabulary and random
weights from a fixed seed (hive/tiny_model.py), so every run writes the same bytes."""

from __future__ import annotations

from pathlib import Path

from hive.tiny_model import TinyShape, write_tiny_model

GGUF8_SEED = 2  # greedy answers to a short prompt vary, rather than repeat one byte
GGUF8_SHAPE = TinyShape(n_embd=64, n_layer=8, n_head=4, n_head_kv=4, n_ff=128, n_ctx=256)


def write_gguf8(path: Path, *, seed: int = GGUF8_SEED) -> Path:
    """Write the 8-layer model to `path` (a `.gguf` name) and return it. Blocks: well
    under a second."""
    write_tiny_model(path, seed=seed, shape=GGUF8_SHAPE)
    return path
