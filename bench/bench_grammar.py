"""Grammar-constrained generation against the same generation unconstrained.

    .venv/bin/python bench/bench_grammar.py [--quick]

Loads builtin:smollm2 (SmolLM2-135M-Instruct, kept in .cache/smollm2.gguf; builtin:tiny
stands in when it cannot be had) into the worker's own Engine in this process and runs
the worker's decode loop (worker/_batch.py, worker/_sampler.py): one token per decode, the
slot's sampler picks. In interleaved rounds (the order alternating, so a machine whose
load drifts slows both alike) it generates for the same chat prompt and seed, once free
and once under a JSON schema's grammar (response_format json_schema, worker/_grammar.py),
and once free with logprobs (top 5, worker/_logprobs.py, as the slot loop computes them),
and prints each one's median tok/s, the ratios (goals, issue 26: constrained >= 0.8x
unconstrained; logprobs cost <= 5 %) and the sampler's own time per token in each.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))
from _common import conditions, quick_flag
from bench_slots import model_path

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "hives": {"type": "array", "items": {"type": "string", "maxLength": 20}},
        "story": {"type": "string"},
    },
    "required": ["name", "age", "hives", "story"],
    "additionalProperties": False,
}
PROMPT = [{"role": "user", "content": "Describe a beekeeper as JSON, with a long story."}]


TOP_LOGPROBS = 5  # alternatives per token in the logprobs round


def generate(
    engine: Any, prompt: list[int], grammar: str | None, n: int, logprobs: bool = False
) -> tuple[int, float, float]:
    """Generate up to `n` tokens; (tokens, seconds from the first to the last, seconds the
    sampler, and logprobs when asked, took)."""
    import llama_cpp

    from worker._batch import Batch
    from worker._logprobs import Logprobs
    from worker._sampler import Sampler
    from worker.engine import Sampling

    llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(engine.ctx), 0, -1, -1)
    sampling = Sampling(n, 0.8, 0.95, 40, 7, grammar=grammar)
    sampler = Sampler(sampling, vocab=engine.vocab, n_vocab=engine.n_vocab)
    batch = Batch(engine.batch_tokens)
    lp = Logprobs(engine.n_vocab, TOP_LOGPROBS, engine.piece) if logprobs else None
    index = batch.add(prompt, 0, 0, logits_last=True)
    batch.decode(engine.ctx)
    token = sampler.sample(engine.ctx, index)
    count, sampling_s = 0, 0.0
    started = time.perf_counter()
    for pos in range(len(prompt), len(prompt) + n):
        if engine.is_end(token):
            break
        count += 1
        batch.clear()
        batch.add([token], pos, 0, logits_last=True)
        batch.decode(engine.ctx)
        began = time.perf_counter()
        token = sampler.sample(engine.ctx, 0)
        if lp is not None:
            lp.entry(llama_cpp.llama_get_logits_ith(engine.ctx, 0), token)
        sampling_s += time.perf_counter() - began
        engine.piece(token)
    took = time.perf_counter() - started
    sampler.close()
    batch.close()
    return count, took, sampling_s


def main() -> None:
    quick = quick_flag(__doc__, "2 rounds of 32 tokens instead of 6 of 96")
    rounds, n = (2, 32) if quick else (6, 96)
    from jobs import ChatMessage
    from worker._grammar import schema_grammar
    from worker.chat import render_chat
    from worker.engine import Engine

    home = Path(tempfile.mkdtemp(prefix="rbee-bench-grammar-"))  # builtin:tiny, if it comes to that
    model, label = model_path(home)
    engine = Engine(model, "cpu", parallel=1)
    engine.load()
    text = render_chat(
        [ChatMessage(role=m["role"], content=m["content"]) for m in PROMPT], engine.chat_template
    )
    prompt = engine.tokenize(text)
    grammar = schema_grammar(SCHEMA)
    print(f"{label}; {conditions()}; {engine.threads} threads; {rounds} rounds of {n} tokens")
    kinds = ("free", "grammar", "logprobs")
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    costs: dict[str, list[float]] = {kind: [] for kind in kinds}
    generate(engine, prompt, None, 8)  # warm-up
    for r in range(rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for kind in order:
            count, took, sampling_s = generate(
                engine, prompt, grammar if kind == "grammar" else None, n, kind == "logprobs"
            )
            rates[kind].append(count / took)
            costs[kind].append(sampling_s / max(count, 1) * 1000)
    median = {kind: statistics.median(rates[kind]) for kind in kinds}
    names = {"free": "unconstrained", "grammar": "json_schema", "logprobs": "logprobs top 5"}
    for kind in kinds:
        print(
            f"{names[kind]:>14}: {median[kind]:6.1f} tok/s, "
            f"sampler {statistics.median(costs[kind]):.2f} ms/token"
        )
    ratio = median["grammar"] / median["free"]
    verdict = "met" if ratio >= 0.8 else "NOT met"
    print(f"constrained / unconstrained: {ratio:.2f}x (goal >= 0.8x: {verdict})")
    cost = 1 - median["logprobs"] / median["free"]
    verdict = "met" if cost <= 0.05 else "NOT met"
    print(f"logprobs cost: {cost:+.1%} of tok/s (goal <= 5%: {verdict})")


if __name__ == "__main__":
    main()
