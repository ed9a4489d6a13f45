"""One llama_batch, refilled every step: the tokens of all slots decoded together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Batch:
    """A reusable llama.cpp batch of up to `capacity` tokens, one sequence id per token.
    Owned by the engine thread; `close()` frees it."""

    def __init__(self, capacity: int) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.capacity = capacity
        self.size = 0
        self._batch: Any = llama_cpp.llama_batch_init(capacity, 0, 1)

    @property
    def room(self) -> int:
        return self.capacity - self.size

    def clear(self) -> None:
        self.size = 0

    def add(self, tokens: Sequence[int], first_pos: int, seq: int, *, logits_last: bool) -> int:
        """Append `tokens` of sequence `seq` at positions from `first_pos`; asks logits for
        the last one when `logits_last`. Returns the last one's index in the batch."""
        batch = self._batch
        i = self.size
        for offset, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = first_pos + offset
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = False
            i += 1
        batch.logits[i - 1] = logits_last
        self.size = i
        return i - 1

    def decode(self, ctx: Any) -> int:
        """llama_decode of what was added: 0 on success (see llama.h for the rest)."""
        self._batch.n_tokens = self.size
        return int(self._llama_cpp.llama_decode(ctx, self._batch))

    def close(self) -> None:
        if self._batch is not None:
            self._llama_cpp.llama_batch_free(self._batch)
            self._batch = None
