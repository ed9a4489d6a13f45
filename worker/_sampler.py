"""One slot's sampler: a llama.cpp sampler chain built from a request's `Sampling`.

The chain is llama-cpp-python's own (`Llama._init_sampler` for `generate` and
`create_completion`), so a seed gives the same tokens here as in-process: top-k, typical
(1.0: off), top-p, min-p 0.05, temperature, then a draw from the seeded distribution;
greedy at temperature 0; the plain distribution below it. Its repeat penalties are left
out: at llama-cpp-python's defaults (1.0, 0, 0) they change nothing.
"""

from __future__ import annotations

from typing import Any

from worker.engine import Sampling

MIN_P = 0.05  # llama-cpp-python's default min_p, which its completions apply
TYPICAL_P = 1.0  # llama-cpp-python's default: typical sampling off
MIN_KEEP = 1  # candidates every filter keeps (llama-cpp-python: max(1, n_probs=0))


class Sampler:
    """A sampler chain owned by one slot for one request; `close()` frees it."""

    def __init__(self, sampling: Sampling) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        # No seed: llama.cpp draws a fresh one, so no seed means no repeat.
        seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed
        chain: Any = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        links: list[Any]
        if sampling.temperature < 0:
            links = [llama_cpp.llama_sampler_init_dist(seed)]
        elif sampling.temperature == 0:
            links = [llama_cpp.llama_sampler_init_greedy()]
        else:
            links = [
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

    def sample(self, ctx: Any, index: int) -> int:
        """The token picked from the logits of the last decode's `index`-th token."""
        return int(self._llama_cpp.llama_sampler_sample(self._chain, ctx, index))

    def close(self) -> None:
        if self._chain is not None:
            self._llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
