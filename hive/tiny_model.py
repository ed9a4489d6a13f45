"""`builtin:tiny`: a tiny random-weight llama GGUF, written here so the whole chain (catalog,
worker spawn, model load, tokens) runs on a fresh machine with no network.

The weights are noise from a seeded generator, so the same seed always gives the same
bytes (and sha256). The tokenizer is a real SentencePiece-style ("llama") vocabulary that
llama.cpp accepts: control tokens, all 256 byte-fallback tokens `<0x00>`…`<0xFF>` (any
text can be encoded) and a few word pieces. The output is gibberish by design.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

TINY_SEED = 20_240_601  # fixed: builtin:tiny has one sha256 on every machine
WEIGHT_SCALE = 0.02  # standard deviation of the random weights (GPT-2's init)

# Word pieces after the byte tokens; "▁" marks a word start, as SentencePiece writes it.
PIECES = (
    "▁", "e", "t", "a", "o", "n", "▁the", "▁a", "▁bee", "▁hive", "▁queen", "▁worker",
    "▁hello", "▁world", "▁rbee", "s", "▁is", "▁and", ".", ",", "!", "?",
)  # fmt: skip
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_BYTE = 1, 2, 3, 6  # llama.cpp token types


@dataclass(frozen=True, slots=True)
class TinyShape:
    """The model's dimensions: small enough to write and load in well under a second."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 128
    n_ctx: int = 256


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types: <unk> <s> </s>, the 256 byte tokens, then PIECES."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TOKEN_BYTE] * 256
    tokens += list(PIECES)
    types += [TOKEN_NORMAL] * len(PIECES)
    # Longer pieces score higher so the greedy SPM merge prefers them over bytes.
    scores = [0.0] * 3 + [-1000.0] * 256 + [-10.0 + len(p) for p in PIECES]
    return tokens, scores, types


def write_tiny_model(path: Path, *, seed: int = TINY_SEED, shape: TinyShape | None = None) -> None:
    """Write the tiny GGUF to `path` (replaced atomically). Blocks: call it in a thread."""
    import gguf
    import numpy as np

    shape = shape or TinyShape()
    tokens, scores, types = vocabulary()
    rng = np.random.default_rng(seed)

    def noise(*dims: int) -> np.ndarray:
        return (rng.standard_normal(dims) * WEIGHT_SCALE).astype(np.float32)

    ones = np.ones(shape.n_embd, dtype=np.float32)
    head_dim = shape.n_embd // shape.n_head
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_name("rbee builtin tiny")
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)
    # numpy shape is (out, in): GGUF stores it reversed, as llama.cpp expects.
    writer.add_tensor("token_embd.weight", noise(len(tokens), shape.n_embd))
    n_kv = head_dim * shape.n_head_kv
    for i in range(shape.n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones.copy())
        writer.add_tensor(f"blk.{i}.attn_q.weight", noise(shape.n_embd, shape.n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", noise(n_kv, shape.n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", noise(n_kv, shape.n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", noise(shape.n_embd, shape.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones.copy())
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", noise(shape.n_ff, shape.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", noise(shape.n_ff, shape.n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", noise(shape.n_embd, shape.n_ff))
    writer.add_tensor("output_norm.weight", ones.copy())
    writer.add_tensor("output.weight", noise(len(tokens), shape.n_embd))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(path)
    except BaseException:  # disk full: half a model is no use, and it holds the space
        with contextlib.suppress(OSError):
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
