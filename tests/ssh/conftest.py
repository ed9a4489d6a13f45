"""A real OpenSSH server on 127.0.0.1 for the keeper to reach remote hives through.

Session-wide: Debian's openssh-server (installed here if missing; CI runs as root), host
and user keys generated in a temp folder, `sshd -D -e` with a config of its own (key auth
only) on a free port. Per test: a known_hosts and an SSH config alias `testhive` pointing
at it (via RBEE_KNOWN_HOSTS and RBEE_SSH_CONFIG, so the user's ~/.ssh is never read), and
a hives config entry whose "remote" venv is this project's own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.support import free_port
from tests.support.ssh import SSHD, Remote, Sshd

SSHD_READY_S = 15.0  # sshd answers within a second; a loaded CI machine gets slack


def _ensure_openssh_server() -> None:
    if Path(SSHD).exists():
        return
    if os.geteuid() != 0:
        pytest.fail(f"{SSHD} is missing; install openssh-server (apt-get install openssh-server)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "openssh-server"], check=True, env=env)


def _write_key(path: Path) -> asyncssh.SSHKey:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(path))
    path.chmod(0o600)
    key.write_public_key(str(path) + ".pub")
    return key


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """sshd on 127.0.0.1:<free port>, accepting only the generated user key, as root."""
    _ensure_openssh_server()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege-separation folder
    folder = tmp_path_factory.mktemp("sshd")
    host_key = _write_key(folder / "host_ed25519")
    user_key = _write_key(folder / "user_ed25519")
    (folder / "authorized_keys").write_bytes(user_key.export_public_key())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_ed25519'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\n"
    )
    log = (folder / "sshd.log").open("wb")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + SSHD_READY_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshd did not start: {(folder / 'sshd.log').read_text()}"
                ) from None
            time.sleep(0.05)
    try:
        yield Sshd(port, folder, host_key, folder / "user_ed25519", process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def remote(
    sshd: Sshd,
    rbee_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Remote]:
    """known_hosts trusting the test sshd, an SSH config alias `testhive`, a hives config
    entry for it; any hive left running on it is stopped after the test."""
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir(mode=0o700)
    remote = Remote(sshd, ssh_dir, tmp_path / "remote-home", free_port(), free_port())
    remote.known_hosts.write_text(sshd.known_hosts_line())
    remote.write_ssh_config()
    remote.write_hives_config(rbee_home)
    monkeypatch.setenv("RBEE_SSH_CONFIG", str(remote.ssh_config))
    monkeypatch.setenv("RBEE_KNOWN_HOSTS", str(remote.known_hosts))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent: the keys above only
    try:
        yield remote
    finally:
        _kill_left_over(remote.pidfile)


def _kill_left_over(pidfile: Path) -> None:
    """A test that failed half-way may leave its remote hive: stop its process group."""
    import json
    import signal

    try:
        record = json.loads(pidfile.read_text())
        pid, started = int(record["pid"]), float(record["create_time"])
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()
    except (OSError, ValueError, KeyError):
        return
    if float(fields[19]) == started:  # still the hive that test started, not a reused pid
        os.killpg(pid, signal.SIGKILL)
