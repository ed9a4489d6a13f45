"""A peer hive's sshd and RPC port for the split link's tests (hive/_rpc_link.py).

`link_sshd` starts a real OpenSSH sshd on 127.0.0.1 whose AuthorizedKeysFile is a file the
test owns (so `grant`/`revoke` edit what sshd reads), host key generated in the test's
folder; `echo_server` is a plain TCP echo server on 127.0.0.1 standing in for the peer's
RPC server. asyncssh is imported inside the functions: `tests.support` stays cheap.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import psutil

SSHD = "/usr/sbin/sshd"  # Debian's openssh-server, as tests/ssh/conftest.py installs it
SSHD_READY_S = 15.0  # sshd answers within a second; a loaded CI machine gets slack
ECHO_CHUNK = 65536  # bytes read at a time by the echo server


@dataclass
class LinkSshd:
    """The peer's running sshd: its port, the authorized_keys it reads, its host key line."""

    port: int
    folder: Path
    authorized_keys: Path
    known_hosts_line: str  # `[127.0.0.1]:PORT ssh-ed25519 …`, as OpenSSH writes it
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        """What sshd said (`-e`: to the log file), for a failing assertion."""
        return (self.folder / "sshd.log").read_text(errors="replace")

    def sessions(self) -> list[psutil.Process]:
        """sshd and the per-connection processes it forked (they call setsid, so they
        leave its process group: found by parentage)."""
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def kill(self) -> None:
        """SIGKILL sshd and every connection it serves, as a peer machine dying would."""
        for proc in reversed(self.sessions()):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP sshd and its connections: TCP stays up, nothing answers (a cut cable)."""
        for proc in self.sessions():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGSTOP)


@contextlib.contextmanager
def link_sshd(folder: Path, port: int) -> Iterator[LinkSshd]:
    """sshd on 127.0.0.1:`port`, key auth only, reading `folder/authorized_keys` (empty at
    first); killed, connections included, when the block ends."""
    import asyncssh

    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} is missing; install openssh-server")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege-separation folder
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    host_key.write_private_key(str(folder / "host_ed25519"))
    (folder / "host_ed25519").chmod(0o600)
    authorized = folder / "authorized_keys"
    authorized.write_text("")
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_ed25519'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\n"
    )
    log = (folder / "sshd.log").open("wb")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    line = f"[127.0.0.1]:{port} {host_key.export_public_key().decode().strip()}\n"
    sshd = LinkSshd(port, folder, authorized, line, process)
    try:
        _wait_listening(sshd)
        yield sshd
    finally:
        if process.poll() is None:
            for proc in sshd.sessions():
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(signal.SIGCONT)  # a frozen one must wake to die
            sshd.kill()
        log.close()


def _wait_listening(sshd: LinkSshd) -> None:
    deadline = time.monotonic() + SSHD_READY_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", sshd.port), timeout=1).close()
            return
        except OSError:
            if sshd.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {sshd.log()}") from None
            time.sleep(0.05)


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """A TCP echo server on 127.0.0.1:<free port> (yielded), every connection served
    until the block ends."""

    async def echo(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await stream.send(await stream.receive(ECHO_CHUNK))

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:  # serving stops, then it closes
        tg.start_soon(listener.serve, echo)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()
