"""The SQLite job table: transitions, crash recovery, retention."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import JobNotFound
from jobs.server import CRASH_REASON, JobRegistry


@pytest.mark.anyio
async def test_transitions_are_recorded_in_order(tmp_path: Path) -> None:
    """Every state change is stored with its time, and the error text of a failure."""
    reg = await JobRegistry.open(tmp_path / "j.db")
    await reg.create("j1", {"operation": "hive_list"})
    await reg.transition("j1", "running")
    await reg.transition("j1", "failed", "it broke")
    record = await reg.get("j1")
    assert [t.state for t in record.transitions] == ["queued", "running", "failed"]
    assert record.state == "failed" and record.error == "it broke"
    assert (await reg.counts()) == {"failed": 1}
    with pytest.raises(JobNotFound, match="no job 'nope'"):
        await reg.get("nope")
    await reg.aclose()


@pytest.mark.anyio
async def test_reopen_lists_jobs_left_running(tmp_path: Path) -> None:
    """Jobs a dead process left queued or running are listed on open, for the service to end."""
    reg = await JobRegistry.open(tmp_path / "j.db")
    await reg.create("run", {"operation": "queen_status"})
    await reg.transition("run", "running")
    await reg.create("queued", {"operation": "queen_status"})
    await reg.create("done", {"operation": "queen_status"})
    await reg.transition("done", "completed")
    await reg.aclose()  # without finishing: as after kill -9
    reg = await JobRegistry.open(tmp_path / "j.db")
    assert sorted(r.id for r in reg.recovered) == ["queued", "run"]
    await reg.transition("run", "failed", CRASH_REASON)  # what the service does next
    run = await reg.get("run")
    assert run.state == "failed" and run.error == CRASH_REASON
    assert [t.state for t in run.transitions] == ["queued", "running", "failed"]
    assert (await reg.get("done")).state == "completed"
    await reg.aclose()


@pytest.mark.anyio
async def test_prune_keeps_newest_finished_jobs(tmp_path: Path) -> None:
    """Retention by count deletes the oldest finished jobs and never a running one."""
    reg = await JobRegistry.open(tmp_path / "j.db")
    for i in range(5):
        await reg.create(f"j{i}", {"operation": "hive_list"})
        await reg.transition(f"j{i}", "completed")
    await reg.create("live", {"operation": "hive_list"})
    await reg.transition("live", "running")
    removed = await reg.prune(max_age_s=None, max_jobs=2)
    assert removed == ["j0", "j1", "j2"]
    assert [r.id for r in await reg.list()] == ["live", "j4", "j3"]
    assert await reg.prune(max_age_s=0, max_jobs=None) == ["j3", "j4"]
    await reg.aclose()
