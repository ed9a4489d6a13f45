"""A model download or registration on a full disk, under a real rbee-hive.

RBEE_HOME is a 2 MiB tmpfs filled to leave less room than the builtin tiny model needs
(~0.5 MB). The job fails with one sentence naming the full disk; nothing half-written
stays behind (a partial tiny model would keep the disk full for every other daemon); the
catalog stays readable; and the same download works once there is room.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from hive.catalog import Catalog, new_entry, parse_ref
from jobs.client import JobClient
from tests.support import fill_disk, spawn_hive

ROOM_BYTES = 200 * 1024  # more than a catalog entry, less than the tiny model


async def run(url: str, operation: dict[str, Any]) -> dict[str, Any]:
    """The job's final state event's data."""
    async with JobClient(url) as client:
        job_id = await client.submit(operation)
        events = [event async for event in client.stream(job_id)]
    return events[-1].data


def free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


@pytest.mark.anyio
async def test_a_download_that_fills_the_disk_fails_cleanly_and_works_once_there_is_room(
    small_home: Path,
) -> None:
    """builtin:tiny on a full disk: one sentence, no leftovers, the catalog readable and the
    room given back; with room again the same download completes."""
    async with spawn_hive(small_home) as hive:
        models = small_home / "models" / "localhost"
        filler = fill_disk(small_home)
        with filler.open("r+b") as f:
            f.truncate(os.fstat(f.fileno()).st_size - ROOM_BYTES)
        room = free_bytes(small_home)

        failed = await run(hive.url, {"operation": "model_download", "model": "builtin:tiny"})
        assert failed["state"] == "failed"
        assert "is full" in failed["error"] and "free some space" in failed["error"], failed
        assert sorted(p.name for p in models.iterdir()) == ["catalog.json"]
        json.loads((models / "catalog.json").read_text())
        # The job's own log and table rows take some; a kept (or still open) partial model
        # would have taken it all.
        assert free_bytes(small_home) > room // 2

        filler.unlink()
        listed = await run(hive.url, {"operation": "model_list"})
        assert listed["state"] == "completed"
        again = await run(hive.url, {"operation": "model_download", "model": "builtin:tiny"})
        assert again["state"] == "completed", again
        assert again["result"]["status"] == "available"


def test_a_catalog_that_cannot_be_saved_keeps_its_old_index_and_no_tmp(
    small_home: Path,
) -> None:
    """Saving the catalog on a full disk raises, leaves the previous catalog.json whole and
    no catalog.json.tmp behind."""
    catalog = Catalog(small_home / "models").load()
    ref = parse_ref("builtin:tiny")
    catalog.put(new_entry("tiny", ref, catalog.file_for("tiny"), owned=True))
    before = (small_home / "models" / "catalog.json").read_text()
    fill_disk(small_home)
    with pytest.raises(OSError):
        catalog.put(new_entry("tiny-2", ref, catalog.file_for("tiny-2"), owned=True))
    assert sorted(p.name for p in (small_home / "models").iterdir()) == ["catalog.json"]
    assert (small_home / "models" / "catalog.json").read_text() == before
