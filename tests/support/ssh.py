"""The test sshd and one test's remote as the SSH tests see them (the `sshd` and `remote`
fixtures in tests/ssh/conftest.py make them). A module of its own, not on the face of
tests.support: it imports asyncssh, which every other test can do without."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncssh

SSHD = "/usr/sbin/sshd"
ALIAS = "testhive"


@dataclass
class Sshd:
    """The running test sshd: where it listens and the keys it knows."""

    port: int
    folder: Path
    host_key: asyncssh.SSHKey
    user_key_path: Path
    process: subprocess.Popen[bytes]

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        key = key or self.host_key
        return f"[127.0.0.1]:{self.port} {key.export_public_key().decode().strip()}\n"


@dataclass
class Remote:
    """One test's view of the remote: its files and the keeper settings pointing at them."""

    sshd: Sshd
    ssh_dir: Path
    home: Path  # RBEE_HOME on the "remote" (the hive's state, log, pidfile)
    hive_port: int
    queen_port: int

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.ssh_dir / "config"

    @property
    def log(self) -> Path:
        return self.home / "logs" / f"hive-{ALIAS}.log"

    @property
    def pidfile(self) -> Path:
        return self.home / "run" / f"hive-{ALIAS}.pid"

    def write_ssh_config(self, identity: Path | None = None) -> None:
        self.ssh_config.write_text(
            f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {self.sshd.port}\n  User root\n"
            f"  IdentityFile {identity or self.sshd.user_key_path}\n"
        )

    def write_hives_config(self, rbee_home: Path, **extra: str) -> None:
        entry = {
            "host": ALIAS,
            "home": str(self.home),
            "venv": sys.prefix,  # this project's own .venv plays the remote's
            "queen_url": f"http://127.0.0.1:{self.queen_port}",
            **extra,
        }
        lines = [f"[hives.{ALIAS}]"] + [f'{k} = "{v}"' for k, v in entry.items()]
        lines.append(f"hive_port = {self.hive_port}")
        config = rbee_home / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "hives.toml").write_text("\n".join(lines) + "\n")
