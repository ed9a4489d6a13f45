"""How long a GGUF file must be, read from its header: what the tensors it lists need.

    layout = read_layout(f, file_size, stop)   # f: an open, non-empty binary file

A GGUF file is a header (magic, version, key/value metadata, one info record per tensor)
and then the tensors' bytes, each at an offset from the aligned end of the header. So the
header alone says where the last tensor ends, and a file that is shorter (truncated) or far
longer (padded with a hole, or something appended) is not the model it claims to be. Only
the header is read, field by field, from a read-only mapping: nothing is decoded or loaded
(gguf.GGUFReader decodes every metadata array, seconds for a large vocabulary), and every
count and length is bounded by the bytes the file has, so a hostile header cannot make the
hive allocate or loop without end. `stop` (a threading.Event) is checked between records.
"""

from __future__ import annotations

import functools
import importlib.util
import mmap
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # what llama.cpp reads; version 1 had 32-bit counts and is long gone
DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT, unless `general.alignment` says otherwise
ALIGNMENT_KEY = "general.alignment"
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME_BYTES = 1 << 16  # a key or tensor name; llama.cpp allows far less
MAX_NESTING = 4  # arrays of arrays: real files nest one level at most
STOP_EVERY = 4096  # records between two looks at the stop flag

# GGUFValueType -> its size in bytes, for the fixed-size types (gguf-py's numbering)
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT32 = 8, 9, 4


class LayoutError(ValueError):
    """Raised when the header is not a GGUF header this hive can read; `reason` says why
    in a few words, never quoting the file's bytes."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Stopped(Exception):
    """Raised when `stop` was set while reading (the job was cancelled)."""


@dataclass(frozen=True, slots=True)
class Layout:
    """What the header says: its version, tensor count and the bytes the file must hold.
    `data_end` is None when a tensor has a type this gguf library does not know."""

    version: int
    tensors: int
    data_start: int
    data_end: int | None
    alignment: int


def read_layout(f: BinaryIO, file_size: int, stop: threading.Event) -> Layout:
    """Read the header of the GGUF file `f` (`file_size` bytes long, not empty); raises
    LayoutError for anything that is not a readable GGUF header, Stopped once `stop` is set.
    The file is mapped, not read: a vocabulary of 300 k strings is skipped in ~0.1 s."""
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return _read(_Reader(view, min(file_size, len(view)), stop))


def read_preamble(reader: _Reader) -> tuple[int, int, int]:
    """(version, tensor count, key/value count) of the header `reader` is at the start of,
    its byte order set; raises LayoutError for a header that is not GGUF this reads."""
    if reader.take(4) != MAGIC:
        raise LayoutError("it does not start with the GGUF magic bytes")
    version = reader.u32()
    if version & 0xFFFF == 0 and version >> 16 in VERSIONS:  # written big-endian
        reader.order = ">"
        version >>= 16
    if version not in VERSIONS:
        raise LayoutError(f"its GGUF version is {version}, not one of {VERSIONS}")
    tensors, kvs = reader.count(24), reader.count(9)
    return version, tensors, kvs


def _read(reader: _Reader) -> Layout:
    version, tensors, kvs = read_preamble(reader)
    alignment = DEFAULT_ALIGNMENT
    for _ in range(kvs):
        key = reader.string(MAX_NAME_BYTES)
        kind = reader.u32()
        if key == ALIGNMENT_KEY and kind == _UINT32:
            alignment = reader.u32()
            if alignment == 0 or alignment & (alignment - 1):
                raise LayoutError(f"its alignment {alignment} is not a power of two")
        else:
            reader.skip_value(kind, 0)
    ends: list[int | None] = [reader.tensor_end() for _ in range(tensors)]
    data_start = _align(reader.offset, alignment)
    known = [end for end in ends if end is not None]
    data_end = None if len(known) < len(ends) else data_start + max(known, default=0)
    return Layout(version, tensors, data_start, data_end, alignment)


@functools.cache
def quant_sizes() -> dict[int, tuple[int, int]]:
    """ggml type -> (elements per block, bytes per block): gguf's own GGML_QUANT_SIZES.

    Read from gguf's `constants` module loaded on its own: importing it the usual way
    runs the package's __init__, which imports numpy and the whole writer (0.1-0.2 s on
    every hive start with a model in its catalog, for a table of a few dozen entries)."""
    spec = importlib.util.find_spec("gguf")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "constants.py"
    loading = importlib.util.spec_from_file_location("_rbee_gguf_constants", path)
    if loading is None or loading.loader is None:
        return {}
    module = importlib.util.module_from_spec(loading)
    loading.loader.exec_module(module)
    return {int(kind): sizes for kind, sizes in module.GGML_QUANT_SIZES.items()}


def _align(n: int, alignment: int) -> int:
    return n + (-n) % alignment


class _Reader:
    """Little reads from the mapped header, each checked against what the file holds."""

    def __init__(self, view: mmap.mmap, size: int, stop: threading.Event) -> None:
        self.view = view
        self.size = size
        self.stop = stop
        self.offset = 0
        self.order = "<"
        self.records = 0
        self.quant_sizes = quant_sizes()

    def skip(self, n: int) -> int:
        """Step over `n` bytes; returns where they start."""
        start = self.offset
        if n > self.size - start:
            raise LayoutError("its header ends before the file says it does (truncated)")
        self.offset = start + n
        return start

    def take(self, n: int) -> bytes:
        start = self.skip(n)
        return self.view[start : start + n]

    def u32(self) -> int:
        value: int = struct.unpack_from(self.order + "I", self.view, self.skip(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack_from(self.order + "Q", self.view, self.skip(8))[0]
        return value

    def count(self, min_record_bytes: int) -> int:
        """A count of records, each at least `min_record_bytes` long: no more than fit."""
        n = self.u64()
        if n * min_record_bytes > self.size - self.offset:
            raise LayoutError(f"its header counts {n} records, more than the file could hold")
        return n

    def string(self, limit: int | None = None) -> str:
        n = self.u64()
        if limit is not None and n > limit:
            raise LayoutError(f"its header has a {n}-byte name")
        return self.take(n).decode("utf-8", "replace")

    def tick(self) -> None:
        self.records += 1
        if self.records % STOP_EVERY == 0 and self.stop.is_set():
            raise Stopped

    def skip_value(self, kind: int, depth: int) -> None:
        self.tick()
        if kind in _SCALAR_BYTES:
            self.skip(_SCALAR_BYTES[kind])
        elif kind == _STRING:
            self.skip(self.u64())
        elif kind == _ARRAY and depth < MAX_NESTING:
            inner = self.u32()
            if inner in _SCALAR_BYTES:
                self.skip(self.count(_SCALAR_BYTES[inner]) * _SCALAR_BYTES[inner])
            elif inner == _STRING:  # a vocabulary: the hot loop, kept tight
                for _ in range(self.count(8)):
                    self.skip(self.u64())
                    self.tick()
            else:
                for _ in range(self.count(8)):  # a string or an array header: 8 bytes or more
                    self.skip_value(inner, depth + 1)
        else:
            raise LayoutError(f"its metadata has a value of unknown type {kind}")

    def tensor_end(self) -> int | None:
        """Read one tensor info record; the end of its data, relative to the data start
        (None for a type this gguf library does not know)."""
        self.tick()
        self.string(MAX_NAME_BYTES)
        dims = self.u32()
        if not 1 <= dims <= MAX_DIMS:
            raise LayoutError(f"a tensor in its header has {dims} dimensions")
        elements = 1
        for _ in range(dims):
            elements *= self.u64()
        kind, offset = self.u32(), self.u64()
        sizes = self.quant_sizes.get(kind)
        if sizes is None:
            return None
        block, block_bytes = sizes
        return offset + -(-elements // block) * block_bytes
