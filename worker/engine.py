"""The loaded model: llama-cpp-python's `Llama` for one GGUF file on one device.

Token streaming (`POST /v1/inference`) is the inference issue; it will call into the
`Llama` held here from a thread (`anyio.to_thread.run_sync`), one request at a time.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import DeviceUnavailable, ModelLoadError

if TYPE_CHECKING:
    import llama_cpp

CONTEXT_TOKENS = 0  # 0: the context the model was trained with (llama.cpp reads it from the GGUF)
DEVICE_PATTERN = re.compile(r"^(cpu|cuda:(\d+))$")


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
