"""The loaded model: llama-cpp-python's `Llama` for one GGUF file on one device.

`load()` and `generate()` block (llama.cpp works in C): the worker calls them through
`anyio.to_thread.run_sync`, one generation at a time (a llama.cpp context is not shared).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from worker.errors import DeviceUnavailable, ModelLoadError

if TYPE_CHECKING:
    import llama_cpp

CONTEXT_TOKENS = 0  # 0: the context the model was trained with (llama.cpp reads it from the GGUF)
DEVICE_PATTERN = re.compile(r"^(cpu|cuda:(\d+))$")
# Context cells left free at the end of a generation: llama-cpp-python reuses the KV
# cache of a prompt it has seen, and after a generation that filled every cell its next
# decode finds no slot ("llama_decode returned 1"), so no generation fills the last two.
CONTEXT_SPARE_TOKENS = 2


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

    max_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    stop: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Generation:
    """How a generation ended: pieces of text sent, why it stopped, how long it took."""

    tokens_out: int
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

    `should_stop` is checked after every token (llama-cpp-python's stopping criteria),
    so a cancelled request ends within a token. A piece is one token's text, except where
    one character spans several tokens (llama-cpp-python holds those back until the
    character is whole). Blocks: run it in a thread.
    """
    import llama_cpp

    started = time.perf_counter()
    first: float | None = None
    count = 0
    reason: StopReason = "length"
    # llama-cpp-python may hold text back for many tokens (an unfinished character, a
    # possible stop string), so checking only between the pieces it yields could let a
    # cancelled request generate on for seconds: its stopping criteria run per token.
    per_token = llama_cpp.StoppingCriteriaList([lambda ids, logits: should_stop()])
    prompt_tokens = len(llama.tokenize(prompt.encode(), add_bos=True))
    budget = llama.n_ctx() - prompt_tokens - CONTEXT_SPARE_TOKENS
    if budget < 1:
        raise ValueError(
            f"the prompt is {prompt_tokens} tokens and this model's context holds "
            f"{llama.n_ctx()}; shorten the prompt"
        )
    # Any: llama-cpp-python types the result as a union of a response and a stream.
    stream: Iterator[dict[str, Any]] = llama.create_completion(  # type: ignore[assignment]
        prompt,
        stopping_criteria=per_token,
        max_tokens=min(sampling.max_tokens, budget),
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        seed=sampling.seed,
        stop=list(sampling.stop) or None,
        stream=True,
    )
    try:
        for chunk in stream:
            if should_stop():
                reason = "cancelled"
                break
            choice = chunk["choices"][0]
            text = choice["text"]
            if text:
                if first is None:
                    first = time.perf_counter()
                emit(text, count)
                count += 1
            if choice.get("finish_reason") == "stop":
                reason = "stop"
    finally:
        close = getattr(stream, "close", None)  # a generator: closing frees llama.cpp's batch
        if close is not None:
            close()
    if should_stop():
        reason = "cancelled"  # the per-token criteria ended it, which llama calls "stop"
    elapsed = time.perf_counter() - started
    return Generation(
        tokens_out=count,
        stop_reason=reason,
        decode_time_ms=round(elapsed * 1000, 3),
        first_token_ms=None if first is None else round((first - started) * 1000, 3),
    )
