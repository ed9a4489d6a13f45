"""The loaded model: one GGUF on one device, in one llama.cpp context that holds `parallel`
sequences (slots), through llama-cpp-python's low-level API.

A split engine (`rpc_servers`) registers those ggml RPC servers as devices first
(worker/_rpc.py) and offloads its layers to them, in the proportions `tensor_split` gives.
Once loaded it watches them (`worker._rpc.PeerWatch`): a peer that fails is reported to
`on_peer_lost` in one sentence naming it.

`load()` blocks (seconds for a real model): the worker runs it in a thread. Afterwards the
context belongs to the engine thread alone (worker/_slots.py); what other threads may call
here (`tokenize`, the figures for /health) reads only the model, which llama.cpp never
changes once loaded.
"""

from __future__ import annotations

import ctypes
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jobs import MAX_TOKENS_DEFAULT, TEMPERATURE_DEFAULT, TOP_K_DEFAULT, TOP_P_DEFAULT
from worker._stop_text import StopText
from worker.errors import DeviceUnavailable, ModelLoadError

if TYPE_CHECKING:
    import llama_cpp

__all__ = [
    "Choice",
    "Engine",
    "Generation",
    "Sampling",
    "StopReason",
    "StopText",
    "gpu_layers",
    "model_meta",
]

DEVICE_PATTERN = re.compile(r"^(cpu|cuda:(\d+))$")
CTX_SIZE_DEFAULT = 4096  # context tokens per slot: a long chat, at a fraction of the KV a
# whole trained window costs (131,072 tokens of Llama-3.2-1B is ~4 GiB per worker)
PARALLEL_CPU = 2  # slots on a CPU: batching 2 streams costs little more than one
PARALLEL_GPU = 4  # slots on a GPU, where a batch of 4 decodes about as fast as one
HERE = "this CPU"  # where a split's own layers go, as its load progress names it
BATCH_TOKENS = 512  # tokens one llama_decode takes at most (llama.cpp's default n_batch)
KV_BYTES_PER_VALUE = 2  # the KV cache holds f16 (llama.cpp's default type_k / type_v)
SPLIT_ALL_LAYERS = 9999  # n_gpu_layers of a split: every layer and the output offloaded
LLAMA_LOG_LEVEL = logging.ERROR  # llama.cpp's own log lines below this are not printed


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


def default_threads() -> int:
    """The machine's physical cores (ggml's threads spin: one per hyperthread pair is as
    fast and leaves the sibling free), else its logical ones."""
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


class Engine:
    """One model on one device, with `parallel` slots of `ctx_size` tokens each.

    Options left None take their defaults when the model loads: PARALLEL_CPU or
    PARALLEL_GPU slots, `default_threads()`, CTX_SIZE_DEFAULT per slot, never more than
    the window the model was trained with.
    """

    def __init__(
        self,
        path: Path,
        device: str,
        *,
        parallel: int | None = None,
        threads: int | None = None,
        ctx_size: int | None = None,
        rpc_servers: Sequence[str] = (),
        tensor_split: Sequence[float] | None = None,
    ) -> None:
        for name, value in (("parallel", parallel), ("threads", threads), ("ctx_size", ctx_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if tensor_split is not None and (
            not rpc_servers or any(x < 0 for x in tensor_split) or sum(tensor_split) <= 0
        ):
            raise ValueError("tensor_split takes shares >= 0 (not all 0), with rpc_servers")
        # A split: RPC servers' devices first, in llama.cpp's order, then this machine's
        # GPUs (a cuda device) or its CPU (a cpu device: its share is the first layers).
        self.rpc_servers = tuple(rpc_servers)
        self.tensor_split = tuple(tensor_split) if tensor_split is not None else None
        self.path = path
        self.device = device
        self.parallel = parallel or (PARALLEL_CPU if device == "cpu" else PARALLEL_GPU)
        self.threads = threads or default_threads()
        self.ctx_size = ctx_size or CTX_SIZE_DEFAULT  # lowered to the trained window on load
        self.kv_bytes: int | None = None  # known once loaded
        self.load_time_s: float | None = None
        self.model: Any = None  # llama_model_p, then the context: owned by the engine thread
        self.ctx: Any = None
        self.vocab: Any = None
        self.n_vocab = 0  # tokens the model knows, once loaded
        self._chat_template: str | None = None
        # A split's: told (any thread) when an RPC peer fails; `busy` says a step is
        # generating, when a silent peer is a frozen one (worker/_rpc.py, PeerWatch).
        self.on_peer_lost: Callable[[str], None] = lambda reason: None
        # Told (the loading thread) how far the load is, 0..1, and where those weights go:
        # "this CPU" or a split's RPC peer (its endpoint), estimated from the layer order.
        self.on_progress: Callable[[float, str], None] | None = None
        self._places: list[tuple[int, str]] = []  # (first layer, where), a split's, in order
        self._layers = 1  # the model's repeating layers, once a split has read them
        self.busy: Callable[[], bool] = lambda: False
        self.peer_watch: Any = None

    @property
    def is_loaded(self) -> bool:
        return self.ctx is not None

    @property
    def chat_template(self) -> str | None:
        """The GGUF's `tokenizer.chat_template`, which the queen's OpenAI door renders
        chat prompts with; None while loading or when the model has none."""
        return self._chat_template

    @property
    def batch_tokens(self) -> int:
        """Tokens one decode takes at most: a prompt chunk plus a token for every slot."""
        return BATCH_TOKENS + self.parallel

    def load(self) -> None:
        """Load the model and make its context; raises ModelLoadError or DeviceUnavailable."""
        n_gpu_layers, main_gpu = gpu_layers(self.device)
        if not self.path.exists():
            raise ModelLoadError(str(self.path), "no such file")
        try:
            import llama_cpp
        except ImportError:
            raise ModelLoadError(
                str(self.path), "llama-cpp-python is not installed; pip install 'rbee[worker]'"
            ) from None
        # llama-cpp-python prints every llama.cpp log line unless its logger says otherwise.
        logging.getLogger("llama-cpp-python").setLevel(LLAMA_LOG_LEVEL)
        started = time.perf_counter()
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.main_gpu = main_gpu
        arrays = self._split(llama_cpp, params) if self.rpc_servers else None
        progress = self._progress_hook(llama_cpp, params)
        model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        del arrays, progress  # the split's shares and overrides, the hook: kept through the load
        if not model:
            raise ModelLoadError(str(self.path), "llama.cpp cannot read it as a GGUF model")
        trained = llama_cpp.llama_model_n_ctx_train(model)
        self.ctx_size = min(self.ctx_size, trained) if trained > 0 else self.ctx_size
        ctx = llama_cpp.llama_init_from_model(model, self._context_params(llama_cpp))
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ModelLoadError(
                str(self.path),
                f"llama.cpp could not make a context of {self.parallel} x {self.ctx_size} "
                "tokens; lower --parallel or --ctx-size",
            )
        self.model, self.ctx = model, ctx
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        # Asked of llama.cpp, which pads the context: the cells a slot really has.
        self.ctx_size = llama_cpp.llama_n_ctx_seq(ctx)
        self.kv_bytes = kv_bytes(model, llama_cpp.llama_n_ctx(ctx))
        template = llama_cpp.llama_model_chat_template(model, None)
        self._chat_template = template.decode("utf-8", errors="replace") if template else None
        self.load_time_s = time.perf_counter() - started
        if self.rpc_servers:
            from worker._rpc import PeerWatch

            self.peer_watch = PeerWatch(
                self.rpc_servers,
                lost=lambda reason: self.on_peer_lost(reason),
                busy=lambda: self.busy(),
            ).start()

    def _split(self, llama_cpp: Any, params: Any) -> Any:
        """Register the RPC servers and offload to them: every layer (a cpu worker keeps
        the first layers and the output when its share, the last of `tensor_split`, is
        not 0); the ctypes arrays set in `params`. Raises RpcUnavailable,
        DeviceUnavailable."""
        from worker._rpc import add_rpc_servers, block_count, output_kept_here

        devices = len(add_rpc_servers(self.rpc_servers))
        params.n_gpu_layers = SPLIT_ALL_LAYERS
        shares = list(self.tensor_split or [1.0] * devices)
        local = 1 if self.device == "cpu" else llama_cpp.llama_max_devices() - devices
        if not devices <= len(shares) <= min(devices + local, llama_cpp.llama_max_devices()):
            raise DeviceUnavailable(
                f"--tensor-split has {len(shares)} shares for {devices} RPC devices; give one "
                f"per RPC device{', then one for this CPU' if self.device == 'cpu' else ''}"
            )
        overrides = None
        if self.device == "cpu" and len(shares) > devices:
            n_layer = block_count(self.path) or _layer_count(llama_cpp, self.path)
            # This CPU's share in units of the n_layer + 1 llama.cpp counts (the layers and
            # the output): the output, then the first `kept - 1` layers.
            kept = round((n_layer + 1) * shares[-1] / sum(shares))
            if kept > n_layer:
                params.n_gpu_layers, shares = 0, [1.0] * devices  # the CPU keeps it all
            elif kept > 0:
                # Layers kept-1 onwards and the output are offloaded in layer order, the
                # output last, to the last device: it is overridden back to this CPU, so
                # that device's share gains a unit for it.
                offloaded = n_layer - (kept - 1)
                params.n_gpu_layers = offloaded + 1
                peers = shares[:devices]
                shares = [offloaded * share / sum(peers) for share in peers]
                shares[-1] += 1.0
                self._places = _places(kept - 1, shares, self.rpc_servers, n_layer)
                self._layers = n_layer
                overrides = output_kept_here()
                params.tensor_buft_overrides = ctypes.addressof(overrides)
            else:
                shares = shares[:devices]
        array = (ctypes.c_float * llama_cpp.llama_max_devices())(*shares)
        params.tensor_split = array
        return array, overrides

    def _progress_hook(self, llama_cpp: Any, params: Any) -> Any:
        """Set llama.cpp's load progress callback to tell `on_progress`; the ctypes hook."""
        told = self.on_progress
        if told is None:
            return None
        places, n_layer = self._places, self._layers

        def hook(progress: float, _: Any) -> bool:
            layer = min(int(progress * n_layer), n_layer - 1)
            where = next((w for first, w in reversed(places) if first <= layer), HERE)
            told(float(progress), where)
            return True  # go on loading

        callback = llama_cpp.llama_progress_callback(hook)
        params.progress_callback = callback
        return callback

    def _context_params(self, llama_cpp: Any) -> Any:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.ctx_size * self.parallel
        params.n_seq_max = self.parallel
        params.kv_unified = False  # each slot its own ctx_size cells: none starves the others
        params.n_batch = params.n_ubatch = self.batch_tokens
        params.n_threads = params.n_threads_batch = self.threads
        # As llama-cpp-python's `Llama` decodes (the same numbers, so the same tokens).
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        return params

    def tokenize(self, text: str) -> list[int]:
        """`text` as the model's tokens, with its start token and special tokens parsed, as
        llama-cpp-python's completions tokenize a prompt. Thread-safe (reads the model)."""
        import llama_cpp

        data = text.encode()
        size = len(data) + 2
        while True:
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, size, True, True)
            if n >= 0:
                return list(buf[:n])
            size = -n

    def piece(self, token: int) -> bytes:
        """The bytes of one token's text (no special tokens), as llama-cpp-python's
        `detokenize([token])` gives them."""
        import llama_cpp

        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, size, 0, False)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def is_end(self, token: int) -> bool:
        """Whether `token` ends a generation (end of sequence, end of turn)."""
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def statistics(self) -> dict[str, Any]:
        """The context's shape for /health: slots, threads, tokens per slot, KV bytes."""
        return {
            "slots": self.parallel,
            "threads": self.threads,
            "ctx_size": self.ctx_size,
            "kv_bytes": self.kv_bytes,
        }


def _places(
    local: int, shares: Sequence[float], endpoints: Sequence[str], n_layer: int
) -> list[tuple[int, str]]:
    """(first layer, where) for this CPU's `local` first layers, then each RPC device's,
    as llama.cpp deals the offloaded units (the layers, then the output) by cumulative
    share; a device dealt no layer is left out."""
    units = n_layer - local + 1
    total = sum(shares)
    bounds = [sum(shares[: i + 1]) / total for i in range(len(shares))]
    places = [(0, HERE)] if local else []
    for unit in range(units - 1):  # the output, last, stays here (overridden)
        device = next(i for i, b in enumerate(bounds) if b > unit / units)
        where = endpoints[device] if device < len(endpoints) else HERE
        if not places or places[-1][1] != where:
            places.append((local + unit, where))
    return places


def _layer_count(llama_cpp: Any, path: Path) -> int:
    """The model's repeating layers (`{arch}.block_count`), from a vocab-only load (its
    metadata and vocabulary: llama_model_n_layer is 0 there)."""
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelLoadError(str(path), "llama.cpp cannot read it as a GGUF model")
    try:
        arch = model_meta(model, "general.architecture") or "llama"
        blocks = model_meta(model, f"{arch}.block_count")
        if blocks is None or not blocks.isdigit():
            raise ModelLoadError(str(path), f"its metadata has no {arch}.block_count")
        return int(blocks)
    finally:
        llama_cpp.llama_model_free(model)


def kv_bytes(model: llama_cpp.llama_model_p, n_ctx: int) -> int:
    """Bytes the KV cache of `n_ctx` cells takes: per layer and cell, a key and a value of
    n_head_kv heads (f16), as llama.cpp allocates them when the context is made."""
    import llama_cpp

    n_embd = llama_cpp.llama_model_n_embd(model)
    n_head = max(llama_cpp.llama_model_n_head(model), 1)
    n_head_kv = llama_cpp.llama_model_n_head_kv(model)
    arch = model_meta(model, "general.architecture") or "llama"
    head_k = int(model_meta(model, f"{arch}.attention.key_length") or n_embd // n_head)
    head_v = int(model_meta(model, f"{arch}.attention.value_length") or n_embd // n_head)
    per_cell = (head_k + head_v) * n_head_kv * KV_BYTES_PER_VALUE
    return int(llama_cpp.llama_model_n_layer(model) * n_ctx * per_cell)


def model_meta(model: llama_cpp.llama_model_p, key: str) -> str | None:
    import llama_cpp

    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, ctypes.sizeof(buf))
    return buf.value.decode() if n >= 0 else None


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
    # OpenAI's: -2..2, 0 is off; each a link of the chain only when not 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) checked < n_vocab
    grammar: str | None = None  # GBNF the output must match (JSON, a tool call)
    logprobs: int | None = None  # None: off; k: the chosen token's and k alternatives'


@dataclass(frozen=True, slots=True)
class Choice:
    """How one of a request's `n` choices ended."""

    index: int
    tokens_out: int
    stop_reason: StopReason


@dataclass(frozen=True, slots=True)
class Generation:
    """How a generation ended: tokens generated, why it stopped, how long it took."""

    tokens_out: int  # llama tokens of all choices, end-of-generation tokens aside
    stop_reason: StopReason  # choice 0's
    decode_time_ms: float
    first_token_ms: float | None  # time to the first piece of text
    prompt_tokens: int  # the prompt's llama tokens, its start token included
    choices: tuple[Choice, ...] = ()  # each choice's end, in order
