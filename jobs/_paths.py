"""Where rbee keeps things on disk, and the names every program agrees on.

platformdirs' per-user folders by default; when RBEE_HOME is set, everything (config,
state, logs, pidfiles, models) lives under it instead, so tests and parallel users never
collide. This is the only module that reads RBEE_HOME; programs pass the resolved
folders down, and the keeper passes RBEE_HOME on to what it starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "RBEE_HOME"  # one folder for everything rbee writes
TOKEN_ENV = "RBEE_TOKEN"  # bearer token the servers require when bound beyond loopback
QUEEN_URL_ENV = "RBEE_QUEEN_URL"  # where the keeper finds the queen
HIVES_CONFIG = "hives.toml"  # in the config folder: each hive's host, url and token

APP_NAME = "rbee"
QUEEN_PORT = 7833  # queen-rbee's default HTTP port
HIVE_PORT = 7835  # rbee-hive's default HTTP port
LOOPBACK = "127.0.0.1"  # every server's default bind address
FOLDER_MODE = 0o700  # rbee's folders: only their owner may list or enter them
FILE_MODE = 0o600  # rbee's files (logs, indexes): only their owner may read them


@dataclass(frozen=True, slots=True)
class RbeePaths:
    """The resolved folders; create them with `ensure()` before writing."""

    config: Path
    state: Path
    logs: Path
    run: Path
    models: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> RbeePaths:
        """Folders for `home`, else $RBEE_HOME, else the platform's per-user folders."""
        if home is None:
            home = os.environ.get(HOME_ENV) or None
        if home is not None:
            root = Path(home).expanduser().resolve()
            return cls(
                config=root / "config",
                state=root / "state",
                logs=root / "logs",
                run=root / "run",
                models=root / "models",
            )
        import platformdirs  # imported here: only needed without RBEE_HOME

        dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
        state = Path(dirs.user_state_dir)
        return cls(
            config=Path(dirs.user_config_dir),
            state=state,
            logs=Path(dirs.user_log_dir),
            run=state / "run",
            models=Path(dirs.user_data_dir) / "models",
        )

    def ensure(self) -> RbeePaths:
        """Create the folders, the owner's only (0700): they hold tokens, job output, logs.
        A folder an older version left open to others is closed."""
        for folder in (self.config, self.state, self.logs, self.run, self.models):
            private_folder(folder)
        return self


def private_folder(folder: Path) -> Path:
    """Create `folder` (and missing parents) the owner's only (0700), closing it if an older
    version left it open to others; returns it."""
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(FOLDER_MODE)
    return folder


def home_env() -> dict[str, str]:
    """The environment entries a parent passes on so its children use the same folders."""
    value = os.environ.get(HOME_ENV)
    return {HOME_ENV: value} if value else {}
