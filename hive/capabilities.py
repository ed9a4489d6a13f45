"""What this machine offers workers: CPU cores, RAM and NVIDIA GPUs, and whether its
llama.cpp build can split a model across hives (ggml's RPC backend).

GPUs come from `nvidia-smi`; a machine without it (or where it fails) is CPU-only, which
is an answer, not an error. The RPC facts are read once from the installed wheel with
ctypes (hive/_rpc_host.py), never by importing llama_cpp.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from typing import Any

import psutil

NVIDIA_SMI_TIMEOUT_S = 5.0  # a wedged driver can hang nvidia-smi; CPU-only beats no answer
NVIDIA_QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
# Free VRAM for the beats: numbers only (a GPU name may hold a comma), MiB.
NVIDIA_MEMORY_QUERY = [
    "--query-gpu=index,memory.total,memory.free",
    "--format=csv,noheader,nounits",
]
MIB = 1024 * 1024


def capabilities() -> dict[str, Any]:
    """CPU, RAM and GPUs right now. Blocks up to NVIDIA_SMI_TIMEOUT_S: call it in a thread."""
    memory = psutil.virtual_memory()
    gpus = nvidia_gpus()
    return {
        "cpu": {
            "cores": psutil.cpu_count(logical=True) or 1,
            "physical_cores": psutil.cpu_count(logical=False),
            "ram_bytes": memory.total,
            "ram_available_bytes": memory.available,
        },
        "gpus": gpus,
        "devices": ["cpu", *(f"cuda:{gpu['index']}" for gpu in gpus)],
        **rpc_support(),
    }


@functools.cache
def rpc_support() -> dict[str, Any]:
    """`supports_rpc`, `llama_cpp_version` and `rpc_protocol` (what a split's peers must
    match), and `rpc_reason` when RPC is not supported; read once (it loads libggml)."""
    from hive._rpc_host import llama_cpp_version, rpc_unsupported_reason
    from jobs import rpc_protocol

    reason = rpc_unsupported_reason()
    found: dict[str, Any] = {
        "supports_rpc": reason is None,
        "llama_cpp_version": llama_cpp_version(),
        "rpc_protocol": rpc_protocol(),
    }
    return found if reason is None else {**found, "rpc_reason": reason}


def nvidia_gpus(program: str = "nvidia-smi") -> list[dict[str, Any]]:
    """NVIDIA GPUs as `{index, name, memory_bytes}`; [] when nvidia-smi is absent or fails."""
    text = _nvidia_smi(program, NVIDIA_QUERY)
    return [] if text is None else parse_nvidia_smi(text)


def gpu_free_memory(program: str = "nvidia-smi") -> dict[str, int]:
    """Free VRAM per device, `{"cuda:0": bytes}`, for the queen's placement; {} when
    nvidia-smi is absent or fails (a CPU-only machine). Blocks up to
    NVIDIA_SMI_TIMEOUT_S: call it in a thread."""
    text = _nvidia_smi(program, NVIDIA_MEMORY_QUERY)
    return {} if text is None else parse_gpu_memory(text)


@functools.cache
def gpu_offload() -> bool:
    """True when the llama.cpp build the workers run can offload to a GPU (a CPU-only
    wheel cannot: a `cuda:N` worker would refuse to start); read once, and only on a
    machine where nvidia-smi lists GPUs, so CPU-only hives never load llama.cpp."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except (ImportError, OSError, AttributeError):
        return False


def _nvidia_smi(program: str, query: list[str]) -> str | None:
    """nvidia-smi's output for `query`, or None when it is absent, hangs or fails."""
    path = shutil.which(program)
    if path is None:
        return None
    try:
        done = subprocess.run(
            [path, *query],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_gpu_memory(text: str) -> dict[str, int]:
    """Rows of `index, memory.total, memory.free` (MiB) as `{"cuda:N": free bytes}`;
    rows that do not parse ("[N/A]", a warning line, blank) are skipped."""
    free: dict[str, int] = {}
    for row in text.splitlines():
        parts = [part.strip() for part in row.split(",")]
        if len(parts) != 3:
            continue
        try:
            index, total, left = (int(p) for p in parts)
        except ValueError:
            continue
        if index < 0 or not 0 <= left <= total:
            continue
        free[f"cuda:{index}"] = left * MIB
    return free


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Rows of `index, name, memory.total (MiB)`; rows that do not parse are skipped."""
    gpus = []
    for row in text.splitlines():
        parts = [part.strip() for part in row.split(",")]
        if len(parts) != 3:
            continue
        index, name, memory = parts
        try:
            gpus.append({"index": int(index), "name": name, "memory_bytes": int(memory) * MIB})
        except ValueError:
            continue
    return gpus


def machine_memory() -> tuple[int, int]:
    """(total, available) bytes of RAM for a heartbeat: cheap enough for every beat,
    unlike nvidia-smi, so GPU memory is not read here."""
    memory = psutil.virtual_memory()
    return memory.total, memory.available
