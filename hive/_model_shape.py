"""A model's shape from its GGUF header: what each layer weighs, what lies outside the
layers, and what a token of context costs, for the queen's placement of a split.

    shape = shape_of(Path("model.gguf"))   # cached per file (path, size, mtime)

Placement splits a model by whole layers (llama.cpp's `tensor_split`), so it needs the
bytes of each block (tensors named `blk.N.*`), the bytes outside them (token embedding,
output norm and output: they go with the worker's own device), the layer count
(`<arch>.block_count`) and the KV cache per token of context, computed as the worker
computes it once loaded (worker.engine.kv_bytes: per layer, a key and a value of
n_head_kv heads in f16). The header is read with hive.gguf_layout's bounded reader from a
read-only mapping; only the handful of metadata values this needs are decoded.
"""

from __future__ import annotations

import functools
import mmap
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hive.gguf_layout import (
    _ARRAY,
    _SCALAR_BYTES,
    _STRING,
    MAX_NAME_BYTES,
    LayoutError,
    _Reader,
    read_preamble,
)

KV_BYTES_PER_VALUE = 2  # f16 keys and values, llama.cpp's default (worker.engine's figure)
ARCH_KEY = "general.architecture"
# <arch>.<suffix> values the KV estimate reads; any of them may be a per-layer array
SUFFIXES = (
    "context_length",
    "block_count",
    "embedding_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
)
MAX_PER_LAYER = 4096  # a per-layer array longer than this is not a layer count
BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.")
CACHE_FILES = 64  # shapes kept (a hive lists each of its models on every model_list)
# GGUFValueType -> struct format, for the scalars a value may be read as (gguf-py's numbering)
_FORMATS = dict(enumerate("BbHhIif?")) | {10: "Q", 11: "q", 12: "d"}


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What a model's header says about its size: bytes per layer (index = layer), bytes
    outside the layers, and KV cache bytes per token of context (all layers)."""

    architecture: str
    layer_bytes: tuple[int, ...]
    other_bytes: int
    kv_bytes_per_token: int
    context_length: int | None = None  # the trained window: a worker's context stops there

    @property
    def layers(self) -> int:
        return len(self.layer_bytes)

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_bytes) + self.other_bytes

    def to_dict(self) -> dict[str, Any]:
        """The shape as the hive's `model_list` reports it (queen.split_plan reads it)."""
        return {
            "architecture": self.architecture,
            "layers": self.layers,
            "layer_bytes": list(self.layer_bytes),
            "other_bytes": self.other_bytes,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "context_length": self.context_length,
        }


def shape_of(path: Path) -> ModelShape | None:
    """The shape of the GGUF file at `path`, or None when it cannot be read as one (gone,
    not GGUF, a tensor type this gguf library does not know, no block count). Cached per
    (path, size, mtime): a changed file is read again. Blocks: mmaps the header."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _cached(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=CACHE_FILES)
def _cached(path: str, size: int, mtime_ns: int) -> ModelShape | None:
    if size == 0:
        return None
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return read_shape(_Reader(view, min(size, len(view)), threading.Event()))
    except (OSError, ValueError):  # LayoutError is a ValueError; mmap of a changed file
        return None


def read_shape(reader: _Reader) -> ModelShape | None:
    """Read the header `reader` is at the start of; raises LayoutError for a header that is
    not GGUF, None when it lacks what a shape needs."""
    _, tensors, kvs = read_preamble(reader)
    values: dict[str, Any] = {}
    for _ in range(kvs):
        key = reader.string(MAX_NAME_BYTES)
        kind = reader.u32()
        if key == ARCH_KEY or key.endswith(SUFFIXES):
            values[key] = _value(reader, kind)
        else:
            reader.skip_value(kind, 0)
    arch = values.get(ARCH_KEY)
    if not isinstance(arch, str):
        return None
    n_layer = _total(values.get(f"{arch}.block_count"), 1)
    if n_layer <= 0 or n_layer > MAX_PER_LAYER:
        return None
    layer_bytes = [0] * n_layer
    other = 0
    for _ in range(tensors):
        name, size = _tensor(reader)
        if size is None:
            return None
        found = BLOCK_TENSOR.match(name)
        if found is not None and int(found.group(1)) < n_layer:
            layer_bytes[int(found.group(1))] += size
        else:
            other += size
    trained = _total(values.get(f"{arch}.context_length"), 0) or None
    kv = _kv_per_token(values, arch, n_layer)
    return ModelShape(arch, tuple(layer_bytes), other, kv, trained)


def _kv_per_token(values: dict[str, Any], arch: str, n_layer: int) -> int:
    """KV bytes per token of context over all layers: worker.engine.kv_bytes's sum, with a
    per-layer head count (some architectures vary it) summed layer by layer."""
    n_embd = _total(values.get(f"{arch}.embedding_length"), 0)
    n_head = max(_per_layer(values.get(f"{arch}.attention.head_count"), n_layer, 1)[0], 1)
    head_k = _total(values.get(f"{arch}.attention.key_length"), 0) or n_embd // n_head
    head_v = _total(values.get(f"{arch}.attention.value_length"), 0) or n_embd // n_head
    heads_kv = _per_layer(
        values.get(f"{arch}.attention.head_count_kv", values.get(f"{arch}.attention.head_count")),
        n_layer,
        n_head,
    )
    return sum((head_k + head_v) * h * KV_BYTES_PER_VALUE for h in heads_kv)


def _per_layer(value: Any, n_layer: int, default: int) -> list[int]:
    if isinstance(value, list) and len(value) == n_layer:
        return [int(v) for v in value]
    return [_total(value, 1) or default] * n_layer


def _total(value: Any, default: int) -> int:
    """An integer metadata value (the first of a per-layer array), else `default`."""
    if isinstance(value, list):
        value = value[0] if value else default
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


def _value(reader: _Reader, kind: int) -> Any:
    """One metadata value: a number, a string, or a short array of numbers (a longer or
    nested one is skipped and read as None)."""
    if kind in _FORMATS:
        start = reader.skip(_SCALAR_BYTES[kind])
        return struct.unpack_from(reader.order + _FORMATS[kind], reader.view, start)[0]
    if kind == _STRING:
        return reader.string(MAX_NAME_BYTES)
    if kind == _ARRAY:
        start = reader.offset
        inner = reader.u32()
        n = reader.u64()
        reader.offset = start
        if inner in _FORMATS and n <= MAX_PER_LAYER:
            reader.skip(4)
            size = _SCALAR_BYTES[inner]
            first = reader.skip(reader.count(size) * size)
            fmt = f"{reader.order}{n}{_FORMATS[inner]}"
            return list(struct.unpack_from(fmt, reader.view, first))
    reader.skip_value(kind, 0)
    return None


def _tensor(reader: _Reader) -> tuple[str, int | None]:
    """One tensor info record: its name and its data's bytes (None for an unknown type)."""
    reader.tick()
    name = reader.string(MAX_NAME_BYTES)
    dims = reader.u32()
    if not 1 <= dims <= 4:
        raise LayoutError(f"a tensor in its header has {dims} dimensions")
    elements = 1
    for _ in range(dims):
        elements *= reader.u64()
    kind = reader.u32()
    reader.u64()  # its offset: the shape needs only sizes
    sizes = reader.quant_sizes.get(kind)
    if sizes is None:
        return name, None
    block, block_bytes = sizes
    return name, -(-elements // block) * block_bytes
