"""One slot's sampler: a llama.cpp sampler chain built from a request's `Sampling`.

The chain is llama-cpp-python's own (`Llama._init_sampler` for `generate` and
`create_completion`), so a seed gives the same tokens here as in-process: top-k, typical
(1.0: off), top-p, min-p 0.05, temperature, then a draw from the seeded distribution;
greedy at temperature 0; the plain distribution below it. OpenAI's `logit_bias` and
presence/frequency penalties come first, in llama.cpp's common sampler's order, and only
when set: at their defaults the chain, and so every token, is exactly as before.

A grammar (structured output, forced tool calls) is a sampler apart, applied as llama.cpp's
common sampler applies it (`common_sampler_sample`): the chain picks from the raw logits
first, the grammar only checks that one token, and only a rejected pick is drawn again
from logits the grammar has masked, which costs a pass over the whole vocabulary. Most
picks pass, so constrained output runs at nearly the unconstrained speed.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

from worker.engine import Sampling

MIN_P = 0.05  # llama-cpp-python's default min_p, which its completions apply
TYPICAL_P = 1.0  # llama-cpp-python's default: typical sampling off
MIN_KEEP = 1  # candidates every filter keeps (llama-cpp-python: max(1, n_probs=0))
REPEAT_PENALTY_OFF = 1.0  # llama.cpp's repeat penalty (not OpenAI's): off


class Sampler:
    """A sampler chain owned by one slot for one request's choice; `close()` frees it.

    `vocab` and `n_vocab` (the loaded model's) are needed for penalties, logit bias and a
    grammar; `penalty_window` is how many of the last tokens the penalties count (the
    slot's context: all of a choice's output); `choice` is added to the seed, so the
    choices of one seeded request differ and each repeats."""

    def __init__(
        self,
        sampling: Sampling,
        *,
        vocab: Any = None,
        n_vocab: int = 0,
        penalty_window: int = 0,
        choice: int = 0,
    ) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._n_vocab = n_vocab
        # No seed: llama.cpp draws a fresh one, so no seed means no repeat.
        seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed + choice
        chain: Any = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        links: list[Any] = []
        if sampling.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(sampling.logit_bias))(
                *(llama_cpp.llama_logit_bias(t, b) for t, b in sampling.logit_bias)
            )
            links.append(
                llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(sampling.logit_bias), biases)
            )
        if sampling.presence_penalty or sampling.frequency_penalty:
            links.append(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab,
                    max(penalty_window, 1),
                    REPEAT_PENALTY_OFF,
                    sampling.frequency_penalty,
                    sampling.presence_penalty,
                )
            )
        if sampling.temperature < 0:
            links += [llama_cpp.llama_sampler_init_dist(seed)]
        elif sampling.temperature == 0:
            links += [llama_cpp.llama_sampler_init_greedy()]
        else:
            links += [
                llama_cpp.llama_sampler_init_top_k(sampling.top_k),
                llama_cpp.llama_sampler_init_typical(TYPICAL_P, MIN_KEEP),
                llama_cpp.llama_sampler_init_top_p(sampling.top_p, MIN_KEEP),
                llama_cpp.llama_sampler_init_min_p(MIN_P, MIN_KEEP),
                llama_cpp.llama_sampler_init_temp(sampling.temperature),
                llama_cpp.llama_sampler_init_dist(seed),
            ]
        for link in links:  # the chain owns its links and frees them with itself
            llama_cpp.llama_sampler_chain_add(chain, link)
        self._chain: Any = chain
        self._grammar: Any = None
        if sampling.grammar is not None:
            self._grammar = llama_cpp.llama_sampler_init_grammar(
                vocab, sampling.grammar.encode(), b"root"
            )
            if not self._grammar:
                self.close()
                raise ValueError("llama.cpp could not parse the grammar made for this request")
            self._candidates = _Candidates(llama_cpp, n_vocab)

    def sample(self, ctx: Any, index: int) -> int:
        """The token picked from the logits of the last decode's `index`-th token."""
        if self._grammar is None:
            return int(self._llama_cpp.llama_sampler_sample(self._chain, ctx, index))
        llama_cpp, cand = self._llama_cpp, self._candidates
        logits = llama_cpp.llama_get_logits_ith(ctx, index)
        token = cand.pick(self._chain, logits)
        if not cand.allows(self._grammar, token):  # resample within the grammar
            token = cand.pick(self._chain, logits, first=self._grammar)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def close(self) -> None:
        for name in ("_chain", "_grammar"):
            sampler = getattr(self, name, None)
            if sampler:
                self._llama_cpp.llama_sampler_free(sampler)
            setattr(self, name, None)


class _Candidates:
    """A reusable llama_token_data_array over the whole vocabulary (numpy-filled), and a
    one-token array to ask a grammar about a single pick."""

    def __init__(self, llama_cpp: Any, n_vocab: int) -> None:
        import numpy as np

        self._llama_cpp = llama_cpp
        self._np = np
        self._n = n_vocab
        self._data = np.zeros(
            n_vocab, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")], align=True)
        )
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._array = llama_cpp.llama_token_data_array(
            data=self._data.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=n_vocab,
            selected=-1,
            sorted=False,
        )
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._one, llama_cpp.llama_token_data_p),
            size=1,
            selected=-1,
            sorted=False,
        )

    def pick(self, chain: Any, logits: Any, *, first: Any = None) -> int:
        """The chain's pick from `logits` (after `first`, a grammar, masked them)."""
        np, llama_cpp = self._np, self._llama_cpp
        data = self._data
        data["id"] = self._ids
        data["logit"] = np.ctypeslib.as_array(logits, shape=(self._n,))
        data["p"] = 0.0
        array = self._array
        array.size, array.selected, array.sorted = self._n, -1, False
        ref = ctypes.byref(array)
        if first is not None:
            llama_cpp.llama_sampler_apply(first, ref)
        llama_cpp.llama_sampler_apply(chain, ref)
        return int(array.data[array.selected].id)

    def allows(self, grammar: Any, token: int) -> bool:
        """Whether the grammar, in its state now, accepts `token` next."""
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 1.0, 0.0
        self._one_array.size, self._one_array.selected = 1, -1
        self._one_array.sorted = False
        self._llama_cpp.llama_sampler_apply(grammar, ctypes.byref(self._one_array))
        return not math.isinf(self._one[0].logit)
