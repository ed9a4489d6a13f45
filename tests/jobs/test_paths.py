"""Where rbee keeps things: RBEE_HOME when set, platformdirs otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.paths import HOME_ENV, RbeePaths, home_env


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
