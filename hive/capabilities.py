"""What this machine offers workers: CPU cores, RAM and NVIDIA GPUs.

GPUs come from `nvidia-smi`; a machine without it (or where it fails) is CPU-only, which
is an answer, not an error.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import psutil

NVIDIA_SMI_TIMEOUT_S = 5.0  # a wedged driver can hang nvidia-smi; CPU-only beats no answer
NVIDIA_QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
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
    }


def nvidia_gpus(program: str = "nvidia-smi") -> list[dict[str, Any]]:
    """NVIDIA GPUs as `{index, name, memory_bytes}`; [] when nvidia-smi is absent or fails."""
    path = shutil.which(program)
    if path is None:
        return []
    try:
        done = subprocess.run(
            [path, *NVIDIA_QUERY],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return parse_nvidia_smi(done.stdout)


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
