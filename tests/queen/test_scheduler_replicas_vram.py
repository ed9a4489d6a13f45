"""VRAM for placement: the hive reads free GPU memory from nvidia-smi's csv (recorded
output here: this machine has no GPU), reports none without nvidia-smi, and the queen
puts a worker on the GPU with the most free VRAM that fits, else on the CPU."""

from __future__ import annotations

import shutil

from hive.capabilities import gpu_free_memory, parse_gpu_memory
from hive.heartbeat import usable_gpu_memory
from jobs import HiveBeat
from queen._memory import choose_device
from queen._provision import gpu_memory
from queen.hives import HiveRegistry

MIB = 1 << 20
# `nvidia-smi --query-gpu=index,memory.total,memory.free --format=csv,noheader,nounits`
# on a two-GPU machine, with a GPU whose memory is not reported and a driver warning.
RECORDED = """0, 24576, 20311
1, 16384, 1024
2, [N/A], [N/A]
WARNING: infoROM is corrupted at gpu 0000:65:00.0

"""


def test_free_vram_parses_per_gpu_and_unreadable_rows_are_skipped() -> None:
    assert parse_gpu_memory(RECORDED) == {"cuda:0": 20311 * MIB, "cuda:1": 1024 * MIB}
    assert parse_gpu_memory("0, 100, 200\n-1, 5, 1\n") == {}  # free above total, bad index
    assert parse_gpu_memory("") == {}


def test_a_machine_without_nvidia_smi_reports_no_vram() -> None:
    """The absence path, for real: no such program, and (here) no nvidia-smi at all."""
    assert gpu_free_memory("no-such-nvidia-smi-here") == {}
    if shutil.which("nvidia-smi") is None:
        assert gpu_free_memory() == {} and usable_gpu_memory() == {}


def test_a_worker_goes_to_the_gpu_with_most_free_vram_that_fits_else_the_cpu() -> None:
    free = parse_gpu_memory(RECORDED)
    assert choose_device(free, 900 * MIB) == "cuda:0"
    assert choose_device(free, 20311 * MIB) == "cuda:0"
    assert choose_device(free, 30000 * MIB) == "cpu"
    assert choose_device(free, None) == "cpu"  # unknown size: never risk the GPU
    assert choose_device({}, MIB) == "cpu"


def test_the_vram_a_hive_beats_is_what_placement_reads() -> None:
    """The registry keeps each beat's free VRAM, so a spawn placed by the queen goes to the
    GPU its hive last reported room on (and back to the CPU once the room is gone)."""
    hives = HiveRegistry({}, secret="test-secret")
    body = {"hive_id": "gpu1", "url": "http://10.0.0.5:7835", "version": "0.1.0", "ts": 1.0}
    hives.beat(HiveBeat.model_validate({**body, "gpu_free_bytes": {"cuda:1": 8192 * MIB}}))
    assert choose_device(gpu_memory(hives.get("gpu1")), 4096 * MIB) == "cuda:1"
    hives.beat(HiveBeat.model_validate({**body, "gpu_free_bytes": {"cuda:1": 1024 * MIB}}))
    assert choose_device(gpu_memory(hives.get("gpu1")), 4096 * MIB) == "cpu"
