"""What a real hive writes is its owner's only (docs/failures.md): folders 0700, files 0600."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from jobs.client import JobClient
from tests.support import run_job, spawn_hive

pytestmark = pytest.mark.anyio


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_hive_folders_and_files_are_owner_only(rbee_home: Path) -> None:
    """After a model download (builtin:tiny) and a worker spawn, the hive's worker state and
    worker log folders and its catalog folder are 0700 (an existing 0755 one is closed),
    and the worker's log and catalog.json are 0600."""
    loose = [rbee_home / "logs" / "workers", rbee_home / "models" / "localhost"]
    for folder in loose:
        folder.mkdir(parents=True)
        folder.chmod(0o755)  # as an older hive left them
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        download = await run_job(client, {"operation": "model_download", "model": "builtin:tiny"})
        assert download[-1].state == "completed", download[-1].data
        spawn = await run_job(client, {"operation": "worker_spawn", "model": "tiny"})
        assert spawn[-1].state == "completed", spawn[-1].data
        worker = spawn[-1].data["result"]
        folders = {p: mode(p) for p in [*loose, rbee_home / "state" / "hive-localhost" / "workers"]}
        files = {
            p: mode(p)
            for p in [Path(worker["log"]), rbee_home / "models" / "localhost" / "catalog.json"]
        }
    assert folders == dict.fromkeys(folders, 0o700)
    assert files == dict.fromkeys(files, 0o600)
