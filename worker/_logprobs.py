"""OpenAI's `logprobs` for one generated token, from the logits the sampler saw.

The log-probabilities are the log-softmax of the model's raw logits at that position, as
OpenAI and llama.cpp's server report them (before bias, penalties, filters and
temperature), so they say what the model thought, whatever the sampling. Only asked for
when a request sets `logprobs`: a pass over the vocabulary per token, in numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Entry = dict[str, Any]


class Logprobs:
    """Entries `{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}...k]}`."""

    def __init__(self, n_vocab: int, k: int, piece: Callable[[int], bytes]) -> None:
        self._n = n_vocab
        self._k = k
        self._piece = piece
        self._pieces: dict[int, bytes] = {}

    def entry(self, logits: Any, token: int) -> Entry:
        """The entry for `token` picked from `logits` (llama_get_logits_ith's pointer)."""
        import numpy as np

        raw = np.ctypeslib.as_array(logits, shape=(self._n,))
        top = float(raw.max())
        lse = top + float(np.log(np.exp(raw - top, dtype=np.float64).sum()))
        entry = self._one(token, float(raw[token]) - lse)
        alternatives: list[Entry] = []
        if self._k:
            best = np.argpartition(raw, -self._k)[-self._k :]
            best = best[np.argsort(-raw[best], kind="stable")]
            alternatives = [self._one(int(t), float(raw[t]) - lse) for t in best]
        entry["top_logprobs"] = alternatives
        return entry

    def _one(self, token: int, logprob: float) -> Entry:
        data = self._pieces.get(token)
        if data is None:
            data = self._pieces[token] = self._piece(token)
        return {
            "token": data.decode("utf-8", errors="replace"),
            "logprob": min(logprob, 0.0),
            "bytes": list(data),
        }
