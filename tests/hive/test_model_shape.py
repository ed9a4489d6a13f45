"""A model's shape from its GGUF header: what each layer weighs, what lies outside the
layers, and the KV cache per token, checked against the gguf library's own reading."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hive._model_shape import shape_of
from hive.catalog import ModelEntry
from hive.tiny_model import TinyShape, write_tiny_model


def _bytes_by_gguf(path: Path) -> tuple[list[int], int]:
    """Per-layer and other tensor bytes as gguf.GGUFReader counts them (decodes it all)."""
    import gguf

    reader = gguf.GGUFReader(path)
    layers: dict[int, int] = {}
    other = 0
    for tensor in reader.tensors:
        if tensor.name.startswith("blk."):
            n = int(tensor.name.split(".")[1])
            layers[n] = layers.get(n, 0) + int(tensor.n_bytes)
        else:
            other += int(tensor.n_bytes)
    return [layers[n] for n in sorted(layers)], other


def test_the_shape_of_builtin_tiny_matches_what_gguf_reads(tmp_path: Path) -> None:
    """Layers, their bytes and the bytes outside them are what the gguf library counts,
    and the KV per token is the worker's sum: 2 × head_dim × n_head_kv × f16 per layer."""
    dims = TinyShape(n_layer=3, n_head_kv=2)
    path = tmp_path / "tiny.gguf"
    write_tiny_model(path, shape=dims)
    shape = shape_of(path)
    assert shape is not None
    layers, other = _bytes_by_gguf(path)
    assert (list(shape.layer_bytes), shape.other_bytes) == (layers, other)
    assert shape.layers == 3 and shape.architecture == "llama"
    assert shape.context_length == dims.n_ctx
    head_dim = dims.n_embd // dims.n_head
    assert shape.kv_bytes_per_token == 3 * 2 * head_dim * dims.n_head_kv * 2
    assert shape.weight_bytes <= path.stat().st_size


def test_a_per_layer_kv_head_count_is_summed_layer_by_layer(tmp_path: Path) -> None:
    """An architecture that varies n_head_kv per layer (an array in the header) costs
    each layer's own heads, as llama.cpp allocates them."""
    import gguf

    path = tmp_path / "varied.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(3)
    writer.add_embedding_length(16)
    writer.add_head_count(4)
    writer.add_head_count_kv([1, 2, 4])
    for n in range(3):
        writer.add_tensor(f"blk.{n}.attn_q.weight", np.zeros((16, 16), dtype=np.float32))
    writer.add_tensor("token_embd.weight", np.zeros((8, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shape = shape_of(path)
    assert shape is not None
    assert shape.layer_bytes == (1024, 1024, 1024) and shape.other_bytes == 512
    assert shape.kv_bytes_per_token == sum(2 * 4 * heads * 2 for heads in (1, 2, 4))


def test_a_file_that_is_not_a_readable_model_has_no_shape(tmp_path: Path) -> None:
    """Missing, empty, not GGUF or cut short: no shape (the listing says null), no error."""
    good = tmp_path / "tiny.gguf"
    write_tiny_model(good)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:200])
    empty = tmp_path / "empty.gguf"
    empty.touch()
    text = tmp_path / "text.gguf"
    text.write_text("not a model\n" * 10)
    for path in (tmp_path / "missing.gguf", cut, empty, text):
        assert shape_of(path) is None, path


def test_the_catalog_lists_the_shape_and_reads_a_changed_file_again(tmp_path: Path) -> None:
    """`model_list` entries carry the shape of available models; a file rewritten with
    another shape is read again (the cache is per path, size and mtime)."""
    path = tmp_path / "tiny.gguf"
    write_tiny_model(path, shape=TinyShape(n_layer=2))
    entry = ModelEntry("tiny", "builtin:tiny", str(path), "available", 0.0)
    assert entry.to_dict()["shape"]["layers"] == 2
    write_tiny_model(path, shape=TinyShape(n_layer=4))
    os.utime(path, ns=(1, 1))  # a new mtime even within the clock's resolution
    assert entry.to_dict()["shape"]["layers"] == 4
    entry.status = "downloading"
    assert entry.to_dict()["shape"] is None
