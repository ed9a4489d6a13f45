"""Where rbee keeps things: RBEE_HOME when set, platformdirs otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import HOME_ENV, RbeePaths, home_env
from jobs.client import JobClient


def test_rbee_home_holds_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With RBEE_HOME set, config, state, logs, pidfiles and models all live under it."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    paths = RbeePaths.resolve().ensure()
    for folder in (paths.config, paths.state, paths.logs, paths.run, paths.models):
        assert folder.is_dir() and tmp_path in folder.parents
    assert home_env() == {HOME_ENV: str(tmp_path)}


def test_platform_folders_without_rbee_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without RBEE_HOME the per-user platform folders are used (XDG on Linux)."""
    monkeypatch.delenv(HOME_ENV, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    paths = RbeePaths.resolve()
    assert paths.state == tmp_path / "state" / "rbee"
    assert paths.config == tmp_path / "config" / "rbee"
    assert paths.run.parent == paths.state
    assert home_env() == {}


@pytest.mark.anyio
async def test_state_logs_and_folders_are_the_owners_only(
    rbee_home: Path, kit, tmp_path: Path
) -> None:
    """Folders are created 0700 (and tightened if older ones were open), and the job table,
    its WAL, the state lock and every job log 0600, whatever the umask."""
    import os
    import stat

    from jobs.server import lock_state_folder

    (rbee_home / "logs").mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        paths = RbeePaths.resolve().ensure()
        lock = lock_state_folder(paths.state)

        async def hello(op: object, job: object) -> str:
            return "hi"

        async with (
            kit.serve(paths.state, {"hive_list": hello}) as served,
            JobClient(served.url) as client,
        ):
            job_id = await client.submit({"operation": "hive_list"})
            assert [e async for e in client.stream(job_id)][-1].state == "completed"
            wal_modes = {f.name: f.stat().st_mode & 0o777 for f in paths.state.glob("*.sqlite3-*")}
        lock.close()
    finally:
        os.umask(old)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    for folder in (paths.config, paths.state, paths.logs, paths.run, paths.models):
        assert mode(folder) == 0o700, folder
    assert mode(paths.state / "joblogs") == 0o700
    files = [paths.state / "jobs.sqlite3", paths.state / "server.lock"]
    files += list((paths.state / "joblogs").glob("*.jsonl"))
    assert len(files) >= 3 and wal_modes == {"jobs.sqlite3-wal": 0o600, "jobs.sqlite3-shm": 0o600}
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
