"""The real rbee-hive process: startup narration, health, capabilities, heartbeats, stop."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support import BeatRecorder, spawn_hive

pytestmark = pytest.mark.anyio


async def test_hive_narrates_serves_and_beats(rbee_home: Path, tmp_path: Path) -> None:
    """rbee-hive narrates startup → listen → ready, answers /health and /v1/capabilities
    (CPU cores and RAM; GPUs only when nvidia-smi reports some), beats to the queen with
    its id and URL, and exits 0 on SIGTERM."""
    recorder = BeatRecorder(tmp_path / "queen")
    async with recorder.serving():
        args = ["--hive-id", "testhive", "--queen-url", recorder.url, "--beat-interval", "0.1"]
        async with spawn_hive(rbee_home, *args) as hive:
            async with httpx.AsyncClient(
                base_url=hive.url,
                trust_env=False,
                headers={"Authorization": f"Bearer {hive.token}"},
            ) as http:
                health = (await http.get("/health")).json()
                caps = (await http.get("/v1/capabilities")).json()
            beats = await recorder.wait_beats(2)
        assert hive.process.returncode == 0, hive.stderr.decode()
    actions = hive.actions()
    assert actions[: actions.index("ready") + 1] == ["startup", "catalog_init", "listen", "ready"]
    assert actions[-1] == "stopped"
    assert health["status"] == "ok"
    assert caps["hive_id"] == "testhive"
    assert caps["cpu"]["cores"] >= 1 and caps["cpu"]["ram_bytes"] > 0
    assert caps["devices"][0] == "cpu" and len(caps["devices"]) == 1 + len(caps["gpus"])
    assert {(b.hive_id, b.url) for b in beats} == {("testhive", hive.url)}


def test_nvidia_smi_rows_parse_and_junk_is_skipped() -> None:
    """nvidia-smi's csv rows become GPUs with bytes of memory; malformed rows are skipped."""
    from hive.capabilities import nvidia_gpus, parse_nvidia_smi

    text = "0, NVIDIA GeForce RTX 3090, 24576\n1, Tesla T4, 15360\ngarbage\n2, x, n/a\n"
    assert parse_nvidia_smi(text) == [
        {"index": 0, "name": "NVIDIA GeForce RTX 3090", "memory_bytes": 24576 * 1024 * 1024},
        {"index": 1, "name": "Tesla T4", "memory_bytes": 15360 * 1024 * 1024},
    ]
    assert nvidia_gpus("no-such-nvidia-smi-here") == []
