"""A model download or registration on a full disk, under a real rbee-hive.

RBEE_HOME is a 2 MiB tmpfs filled to leave less room than the model needs (the builtin
tiny model, ~0.5 MB, or a URL's 3 MiB). The job fails with one sentence naming the full
disk; nothing half-written stays behind (a partial model would keep the disk full for every
other daemon); the catalog stays readable; on a disk that is full for another reason, the
507 names the file that fills it while model list and delete still run; and the same
download works once there is room.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from hive.catalog import Catalog, new_entry, parse_ref
from hive.tiny_model import write_tiny_model
from jobs.client import JobClient
from tests.support import fill_disk, narration, run_job, serve_models, spawn_hive

ROOM_BYTES = 200 * 1024  # more than a catalog entry, less than the tiny model


async def run(url: str, token: str | None, operation: dict[str, Any]) -> dict[str, Any]:
    """The job's final state event's data."""
    async with JobClient(url, token=token) as client:
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

        failed = await run(
            hive.url, hive.token, {"operation": "model_download", "model": "builtin:tiny"}
        )
        assert failed["state"] == "failed"
        assert "is full" in failed["error"] and "free some space" in failed["error"], failed
        assert sorted(p.name for p in models.iterdir()) == ["catalog.json"]
        json.loads((models / "catalog.json").read_text())
        # The job's own log and table rows take some; a kept (or still open) partial model
        # would have taken it all.
        assert free_bytes(small_home) > room // 2

        filler.unlink()
        listed = await run(hive.url, hive.token, {"operation": "model_list"})
        assert listed["state"] == "completed"
        again = await run(
            hive.url, hive.token, {"operation": "model_download", "model": "builtin:tiny"}
        )
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


@pytest.mark.anyio
async def test_a_url_download_that_fills_the_disk_leaves_room_and_the_way_out_runs(
    small_home: Path, tmp_path: Path
) -> None:
    """A URL download larger than the disk fails naming the full disk and removes its .part
    (saying so), so the disk has room again. When something else then fills the disk to
    the last byte, a download is refused 507 naming that file and its size, while model
    list and model delete still run; once the file is gone the model downloads."""
    tiny = tmp_path / "tiny.gguf"
    write_tiny_model(tiny)
    blobs = {"huge.gguf": os.urandom(3 << 20), "tiny.gguf": tiny.read_bytes()}
    (tmp_path / "files").mkdir()
    async with (
        serve_models(blobs, tmp_path / "files") as files,
        spawn_hive(small_home) as hive,
        JobClient(hive.url, token=hive.token) as client,
    ):
        models = small_home / "models" / "localhost"
        huge = await run_job(client, {"operation": "model_download", "model": f"{files}/huge.gguf"})
        error = huge[-1].data["error"]
        assert huge[-1].state == "failed" and "is full" in error and "free some space" in error
        removed = [h for _, action, h in narration(huge) if action == "download_removed"]
        assert len(removed) == 1 and "removed the partial download" in removed[0], removed
        assert not [p.name for p in models.iterdir() if p.name.endswith(".part")]
        assert free_bytes(small_home) > 512 * 1024  # its 2 MiB or so were given back

        filler = fill_disk(small_home)
        headers = {"Authorization": f"Bearer {hive.token}"} if hive.token else {}
        async with httpx.AsyncClient(base_url=hive.url, headers=headers, trust_env=False) as http:
            refused = await http.post(
                "/v1/jobs", json={"operation": "model_download", "model": f"{files}/tiny.gguf"}
            )
        assert refused.status_code == 507, refused.text
        assert f"{filler} (" in refused.json()["error"], refused.json()
        assert refused.json()["detail"]["largest"][0]["path"] == str(filler)
        listed = await run_job(client, {"operation": "model_list"})
        assert listed[-1].state == "completed", listed[-1].data
        assert [m["status"] for m in listed[-1].data["result"]["models"]] == ["failed"]
        deleted = await run_job(client, {"operation": "model_delete", "model": "huge"})
        assert deleted[-1].state == "completed", deleted[-1].data

        filler.unlink()
        again = await run_job(
            client, {"operation": "model_download", "model": f"{files}/tiny.gguf"}
        )
        assert again[-1].state == "completed", again[-1].data
        assert again[-1].data["result"]["size"] == len(blobs["tiny.gguf"])
