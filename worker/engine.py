"""The loaded model: llama-cpp-python's `Llama` for one GGUF file on one device.

`load()` and `generate()` block (llama.cpp works in C): the worker calls them through
`anyio.to_thread.run_sync`, one generation at a time (a llama.cpp context is not shared).
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from jobs import MAX_TOKENS_DEFAULT, TEMPERATURE_DEFAULT, TOP_K_DEFAULT, TOP_P_DEFAULT
from worker.errors import DeviceUnavailable, ModelLoadError

if TYPE_CHECKING:
    import llama_cpp

CONTEXT_TOKENS = 0  # 0: the context the model was trained with (llama.cpp reads it from the GGUF)
DEVICE_PATTERN = re.compile(r"^(cpu|cuda:(\d+))$")
# Context cells left free at the end of a generation: llama-cpp-python reuses the KV
# cache of a prompt it has seen, and after a generation that filled every cell its next
# decode finds no slot ("llama_decode returned 1"), so no generation fills the last two.
CONTEXT_SPARE_TOKENS = 2
PROMPT_CHUNK_S = 0.25  # seconds of prompt evaluation between two cancel checks, aimed at
PROMPT_CHUNK_MIN = 32  # tokens: the first chunk, and the least (smaller batches waste the CPU)


def gpu_layers(device: str) -> tuple[int, int]:
    """(n_gpu_layers, main_gpu) for `device`; raises DeviceUnavailable."""
    match = DEVICE_PATTERN.match(device)
    if match is None:
        raise DeviceUnavailable(f"device {device!r} is not cpu or cuda:N; pass --device cpu")
    if match.group(1) == "cpu":
        return 0, 0
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        raise DeviceUnavailable(
            f"device {device} asked for, but this llama-cpp-python was built without GPU "
            "offload; reinstall it with CMAKE_ARGS=-DGGML_CUDA=on or use --device cpu"
        )
    return -1, int(match.group(2))


class Engine:
    """One model on one device; `load()` blocks (seconds for a real model): run it in a thread."""

    def __init__(self, path: Path, device: str) -> None:
        self.path = path
        self.device = device
        self.llama: llama_cpp.Llama | None = None
        self.load_time_s: float | None = None

    @property
    def is_loaded(self) -> bool:
        return self.llama is not None

    @property
    def chat_template(self) -> str | None:
        """The GGUF's `tokenizer.chat_template`, which the queen's OpenAI door renders
        chat prompts with; None while loading or when the model has none."""
        if self.llama is None:
            return None
        return self.llama.metadata.get("tokenizer.chat_template") or None

    def load(self) -> None:
        """Load the model; raises ModelLoadError or DeviceUnavailable."""
        n_gpu_layers, main_gpu = gpu_layers(self.device)
        if not self.path.exists():
            raise ModelLoadError(str(self.path), "no such file")
        try:
            import llama_cpp
        except ImportError:
            raise ModelLoadError(
                str(self.path), "llama-cpp-python is not installed; pip install 'rbee[worker]'"
            ) from None
        started = time.perf_counter()
        try:
            self.llama = llama_cpp.Llama(
                model_path=str(self.path),
                n_gpu_layers=n_gpu_layers,
                main_gpu=main_gpu,
                n_ctx=CONTEXT_TOKENS,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(str(self.path), str(exc) or type(exc).__name__) from None
        self.load_time_s = time.perf_counter() - started


StopReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True, slots=True)
class Sampling:
    """How to pick tokens (llama-cpp-python's names and meanings)."""

    max_tokens: int = MAX_TOKENS_DEFAULT
    temperature: float = TEMPERATURE_DEFAULT
    top_p: float = TOP_P_DEFAULT
    top_k: int = TOP_K_DEFAULT
    seed: int | None = None
    stop: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Generation:
    """How a generation ended: tokens generated, why it stopped, how long it took."""

    tokens_out: int  # llama tokens, the end-of-generation token aside (not pieces of text)
    stop_reason: StopReason
    decode_time_ms: float
    first_token_ms: float | None  # time to the first piece of text


def generate(
    llama: llama_cpp.Llama,
    prompt: str,
    sampling: Sampling,
    *,
    emit: Callable[[str, int], None],
    should_stop: Callable[[], bool],
) -> Generation:
    """Stream a completion of `prompt`, calling `emit(text, index)` per piece of text.

    `should_stop` is checked between chunks of the prompt (see `evaluate_prompt`) and
    after every generated token, so a cancelled request frees the worker within a chunk
    or a token, even mid-way through a prompt of thousands of tokens. A piece is one
    token's text, except that a character spanning several tokens comes out whole and
    text that may begin a stop string is held back until it cannot. Tokens come from
    llama-cpp-python's `generate`, sampled as `create_completion` samples them (the same
    seed, the same tokens), but driven here so that each one is counted (a piece is not
    a token) and max_tokens is exact (`create_completion` runs past it to finish a
    character). Blocks: run it in a thread.
    """
    import llama_cpp

    started = time.perf_counter()
    tokens = llama.tokenize(prompt.encode(), add_bos=True, special=True)
    budget = llama.n_ctx() - len(tokens) - CONTEXT_SPARE_TOKENS
    if budget < 1:
        raise ValueError(
            f"the prompt is {len(tokens)} tokens and this model's context holds "
            f"{llama.n_ctx()}; shorten the prompt"
        )
    if not tokens:
        raise ValueError("the prompt is empty and this model adds no start token; send text")
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    if vocab is None:
        raise ValueError(f"{llama.model_path} has no vocabulary; it cannot generate text")
    first: float | None = None
    pieces = 0

    def send(text: str) -> None:
        nonlocal first, pieces
        if text:
            if first is None:
                first = time.perf_counter()
            emit(text, pieces)
            pieces += 1

    count = 0
    reason: StopReason = "cancelled"
    if evaluate_prompt(llama, tokens, should_stop):
        # LLAMA_DEFAULT_SEED: llama.cpp draws a fresh seed, so no seed means no repeat.
        llama.set_seed(llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed)
        stop_text = StopText(sampling.stop)
        limit = min(sampling.max_tokens, budget)
        reason = "length"
        stream = llama.generate(
            tokens, top_k=sampling.top_k, top_p=sampling.top_p, temp=sampling.temperature
        )
        try:
            for token in stream:  # the prompt is in the context: it samples at once
                if should_stop():
                    reason = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    reason = "stop"
                    break
                count += 1
                piece, stopped = stop_text.push(llama.detokenize([token]))
                send(piece)
                if stopped:
                    reason = "stop"
                    break
                if count >= limit:
                    break
        finally:
            stream.close()
        if reason != "cancelled":
            send(stop_text.flush())
    elapsed = time.perf_counter() - started
    return Generation(
        tokens_out=count,
        stop_reason=reason,
        decode_time_ms=round(elapsed * 1000, 3),
        first_token_ms=None if first is None else round((first - started) * 1000, 3),
    )


def evaluate_prompt(
    llama: llama_cpp.Llama, tokens: Sequence[int], should_stop: Callable[[], bool]
) -> bool:
    """Bring llama.cpp's context to `tokens`, checking `should_stop` before each chunk;
    False when it said stop.

    llama.cpp cannot be interrupted inside a decode, and one batch of its n_batch (512)
    tokens takes seconds on a big model on a CPU: a prompt evaluated whole kept a cancelled
    worker busy for a minute. So the first chunk is PROMPT_CHUNK_MIN tokens and each next
    one is sized, at the speed of the last, to take about PROMPT_CHUNK_S. What the
    context already holds of `tokens` (the last request's prompt, a conversation's earlier
    turns) is kept; the last token is always evaluated, so sampling reads fresh logits.
    """
    import llama_cpp

    held = llama.input_ids[: llama.n_tokens].tolist()
    differ = (i for i, (a, b) in enumerate(zip(held, tokens, strict=False)) if a != b)
    done = min(next(differ, len(held)), len(tokens) - 1)
    memory = llama_cpp.llama_get_memory(llama.ctx)
    if memory is None or not llama_cpp.llama_memory_seq_rm(memory, -1, done, -1):
        done = 0  # a recurrent model's state cannot be cut: evaluate it all
        if memory is not None:
            llama_cpp.llama_memory_clear(memory, True)
    llama.n_tokens = done
    size = PROMPT_CHUNK_MIN
    while done < len(tokens):
        if should_stop():
            return False
        chunk = tokens[done : done + size]
        began = time.perf_counter()
        llama.eval(chunk)
        done += len(chunk)
        per_token_s = max(time.perf_counter() - began, 1e-6) / len(chunk)
        size = max(PROMPT_CHUNK_MIN, min(llama.n_batch, int(PROMPT_CHUNK_S / per_token_s)))
    return True


class StopText:
    """Token bytes into text: UTF-8 decoded across tokens (a character split over byte
    tokens comes out whole; bytes that are no UTF-8 are dropped, as llama-cpp-python's
    completions drop them) and cut at the first stop string, whose start is held back
    until the text can no longer become one."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._stop = [s for s in stop if s]
        self._held = ""

    def push(self, data: bytes) -> tuple[str, bool]:
        """The text ready to send once `data` is added, and whether a stop string ended it."""
        held = self._held + self._decoder.decode(data)
        found = [i for i in (held.find(s) for s in self._stop) if i >= 0]
        if found:
            self._held = ""
            return held[: min(found)], True
        keep = max(
            (k for s in self._stop for k in range(1, len(s)) if held.endswith(s[:k])), default=0
        )
        self._held = held[len(held) - keep :]
        return held[: len(held) - keep], False

    def flush(self) -> str:
        """What was held back, once the generation ended with no stop string."""
        held, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return held
