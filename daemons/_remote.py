"""`SshHost`: the `daemons.Host` of a machine reached over SSH, and the remote hive's spec.

Everything `daemons` does for a local daemon (spawn detached, pidfile with pid and
start time, relay the log through the line splitter, wait for /health, stop) it does
here through the same calls; only the transport differs. The remote daemon starts as

    setsid nohup sh -c '"$@"; echo $? >EXIT' EXIT env … rbee-hive … </dev/null >>LOG 2>&1 &

from a constant script whose values arrive as quoted arguments ($1, $2, …) and whose
secrets (tokens) arrive on stdin, so neither the shell nor `ps` sees user text as code.
Its start time is field 22 of /proc/PID/stat (clock ticks since boot), which is what
`PidRecord.create_time` holds for a remote daemon. The log streams back from
`tail -n +1 -F LOG` on an SSH channel.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

import anyio
import asyncssh
from anyio.abc import TaskGroup

from daemons import _pidfile as daemons
from daemons import _ssh as ssh
from daemons._errors import SshError
from daemons._host import Daemon
from daemons._hosts import HiveHost
from daemons._logtail import TAIL_CHUNK
from daemons._specs import hive_argv
from jobs import (
    HIVE_CREDENTIAL_ENV,
    HOME_ENV,
    TOKEN_ENV,
    RbeePaths,
    cluster_secret,
    hive_credential,
)
from narration_core import CAPTURE_ENV
from narration_core.proctree import STOP_GRACE_S, StopResult

SECRET_ENV = ("RBEE_TOKEN", "RBEE_HIVE_CREDENTIAL")  # sent on stdin, never on a command line
EXIT_CHECK_EVERY_S = 0.5  # seconds between remote looks at whether the daemon exited
STOP_POLL_S = 0.2  # seconds between remote looks while a stopped daemon winds down
HEALTH_PROBE_TIMEOUT_S = 3  # the remote side's own /health probe, in unhealthy_reason

# $1 log, $2 exit-status file, then the daemon's argv; KEY=VALUE lines on stdin.
# A detached sh waits for the daemon to write its exit status; the pid printed (and kept
# in the pidfile) is the daemon's own, which the sh leaves in $status.pid, not the sh's:
# stopping or killing the pid the keeper knows must stop rbee-hive itself.
START_SCRIPT = """
log=$1; status=$2; shift 2
while IFS= read -r kv; do export "$kv"; done
umask 077
mkdir -p "$(dirname "$log")" "$(dirname "$status")"
rm -f "$status" "$status.pid"
setsid nohup sh -c '"$@" & echo $! >"$0.pid"; wait $!; echo $? >"$0"' "$status" "$@" \
  </dev/null >>"$log" 2>&1 &
tries=0
while [ ! -s "$status.pid" ] && [ $tries -lt 200 ]; do sleep 0.05; tries=$((tries+1)); done
pid=$(cat "$status.pid" 2>/dev/null) || pid=
rm -f "$status.pid"
stat=$(cat /proc/$pid/stat 2>/dev/null) || stat=
echo "$pid ${stat##*) }"
"""
STAT_SCRIPT = 'cat /proc/"$1"/stat 2>/dev/null || true'
ROTATE_SCRIPT = '[ ! -f "$1" ] || mv -f "$1" "$1.1"'
WRITE_SCRIPT = 'umask 077; mkdir -p "$(dirname "$1")" && cat >"$1.tmp" && mv -f "$1.tmp" "$1"'
PROBE_SCRIPT = (
    "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))"
)

FREE_SCRIPT = "import os, sys; s = os.statvfs(sys.argv[1]); print(s.f_bavail * s.f_frsize)"


class SshHost:
    """A machine reached over one SSH connection; `home` is its RBEE_HOME there."""

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        target: HiveHost,
        tg: TaskGroup,
        *,
        user_home: str,
    ) -> None:
        self.conn = conn
        self.target = target
        self.name = target.alias
        self.user_home = user_home  # the remote user's $HOME: what `~/` means there
        self.home = Path(self.absolute(target.home))
        self.run_dir = self.home / "run"
        self.logs = self.home / "logs"
        self._tg = tg
        self._status: dict[int, Path] = {}  # pid -> the file its exit code lands in
        self._exit_checked: dict[int, float] = {}
        self._tails: dict[Path, bytearray] = {}
        self._tail_procs: list[asyncssh.SSHClientProcess[bytes]] = []

    def absolute(self, path: str) -> str:
        """A configured remote path with `~/` made absolute (its home, not ours)."""
        if path == "~":
            return self.user_home
        if path.startswith("~/"):
            return f"{self.user_home.rstrip('/')}/{path[2:]}"
        return path

    def peer_address(self) -> str:
        peer = self.conn.get_extra_info("peername")
        return str(peer[0]) if peer else self.target.ssh_host

    # -- the Host interface ------------------------------------------------------------

    async def spawn(self, daemon: Daemon) -> daemons.PidRecord:
        status = self.run_dir / f"{daemon.name}.exit"
        plain = [f"{k}={v}" for k, v in daemon.env.items() if k not in SECRET_ENV]
        secrets = "".join(f"{k}={v}\n" for k, v in daemon.env.items() if k in SECRET_ENV)
        result = await ssh.run(
            self.conn,
            ssh.sh(START_SCRIPT, str(daemon.log_path), str(status), "env", *plain, *daemon.argv),
            stdin=secrets,
        )
        words = ssh.text(result.stdout).split()
        if result.exit_status != 0 or not words or not words[0].isdigit():
            raise SshError(f"could not start {daemon.program} on {self.name}: {_said(result)}")
        pid = int(words[0])
        self._status[pid] = status
        start = float(words[20]) if len(words) > 20 and words[20].isdigit() else 0.0
        return daemons.PidRecord(
            name=daemon.name,
            pid=pid,
            create_time=start,
            url=daemon.url,
            log=str(daemon.log_path),
            argv=daemon.argv,
        )

    async def read_log(self, path: Path, offset: int) -> bytes:
        """What `tail -F` sent since the last call (the offset is the tail's business)."""
        if path not in self._tails:
            self._tails[path] = bytearray()
            process = await self.conn.create_process(
                ssh.command(["tail", "-n", "+1", "-F", str(path)]), encoding=None
            )
            self._tail_procs.append(process)
            self._tg.start_soon(self._pump, process, self._tails[path])
        buffer = self._tails[path]
        data = bytes(buffer[:TAIL_CHUNK])
        del buffer[: len(data)]
        return data

    async def _pump(self, process: asyncssh.SSHClientProcess[bytes], buffer: bytearray) -> None:
        with contextlib.suppress(asyncssh.Error, OSError, anyio.ClosedResourceError):
            while chunk := await process.stdout.read(TAIL_CHUNK):
                buffer += chunk

    async def rotate_log(self, path: Path) -> None:
        await ssh.run(self.conn, ssh.sh(ROTATE_SCRIPT, str(path)))

    async def log_size(self, path: Path) -> int:
        result = await ssh.run(self.conn, ssh.command(["stat", "-c", "%s", str(path)]))
        size = ssh.text(result.stdout).strip()
        return int(size) if size.isdigit() else 0

    async def exit_code(self, pid: int) -> int | None:
        now = time.monotonic()
        if now - self._exit_checked.get(pid, 0.0) < EXIT_CHECK_EVERY_S:
            return None
        self._exit_checked[pid] = now
        if (state := await self._proc(pid)) is not None and state[0] != "Z":
            return None
        status = self._status.get(pid)
        if status is None:
            return None
        result = await ssh.run(self.conn, ssh.command(["cat", str(status)]))
        text = ssh.text(result.stdout).strip()
        if text.lstrip("-").isdigit():
            code = int(text)
            return code - 256 if code > 128 else code  # sh reports death by signal N as 128+N
        return 1  # gone without a word (killed before its wrapper could write)

    def pidfile(self, name: str) -> daemons.PidFile:
        raise SshError(f"hive {self.name} is remote: --foreground works for localhost only")

    async def read_record(self, name: str) -> daemons.PidRecord | None:
        result = await ssh.run(self.conn, ssh.command(["cat", str(self._pidfile(name))]))
        if result.exit_status != 0:
            return None
        try:
            return daemons.PidRecord(**json.loads(ssh.text(result.stdout)))
        except (ValueError, TypeError):
            return None  # half-written or foreign: stale

    async def write_record(self, record: daemons.PidRecord) -> None:
        path = str(self._pidfile(record.name))
        await ssh.run(self.conn, ssh.sh(WRITE_SCRIPT, path), stdin=json.dumps(asdict(record)))

    async def remove_record(self, name: str) -> None:
        await ssh.run(self.conn, ssh.command(["rm", "-f", str(self._pidfile(name))]))

    def log_origin(self, pid: int) -> str:
        return f"ssh:{self.name}"

    async def unhealthy_reason(self, daemon: Daemon) -> str | None:
        """When the hive answers on its own machine but not from here: say what to fix."""
        bind = self.target.bind_address
        local = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
        argv = daemon.argv  # the port it listens on there, which the URL here may not show
        port = argv[argv.index("--port") + 1] if "--port" in argv else str(self.target.hive_port)
        probe = [self.python(), "-c", PROBE_SCRIPT, f"http://{local}:{port}/health"]
        result = await ssh.run(self.conn, ssh.command([*probe, str(HEALTH_PROBE_TIMEOUT_S)]))
        if result.exit_status != 0:
            return None
        return (
            f"it answers on {self.name} itself but {daemon.url} is not reachable from here: "
            f'set bind = "0.0.0.0" (with a token) in its hives config entry, open port {port} '
            "in that machine's firewall, or set url to an address this machine reaches"
        )

    async def free_bytes(self, folder: Path) -> int | None:
        script = [self.python(), "-c", FREE_SCRIPT, str(folder)]
        result = await ssh.run(self.conn, ssh.command(script))
        text = ssh.text(result.stdout).strip()
        return int(text) if result.exit_status == 0 and text.isdigit() else None

    async def serves(self, record: daemons.PidRecord) -> bool:
        return True  # one RBEE_HOME per remote host: what runs there under its pid is it

    async def is_alive(self, record: daemons.PidRecord) -> bool:
        state = await self._proc(record.pid)
        return state is not None and state[0] != "Z" and float(state[1]) == record.create_time

    async def stop(
        self, record: daemons.PidRecord, *, grace: float = STOP_GRACE_S
    ) -> StopResult | None:
        """SIGTERM the daemon's process group, SIGKILL after `grace` s; None if gone."""
        state = await self._proc(record.pid)
        if not await self.is_alive(record) or state is None:
            return None
        began = time.monotonic()
        # setsid made the shell that waits on the daemon its group's leader: the group
        # holds the daemon, that shell and whatever the daemon started (its workers).
        group = f"-{state[2]}"
        await ssh.run(self.conn, ssh.command(["kill", "-TERM", "--", group]))
        while time.monotonic() - began < grace:
            if not await self.is_alive(record):
                return StopResult(record.pid, killed=False, seconds=time.monotonic() - began)
            await anyio.sleep(STOP_POLL_S)
        await ssh.run(self.conn, ssh.command(["kill", "-KILL", "--", group]))
        return StopResult(record.pid, killed=True, seconds=time.monotonic() - began)

    # -- helpers -----------------------------------------------------------------------

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def python(self) -> str:
        """The venv's interpreter on the remote."""
        return f"{self.venv()}/bin/python"

    def venv(self) -> str:
        return self.absolute(self.target.venv_path)

    async def _proc(self, pid: int) -> tuple[str, str, str] | None:
        """(state letter, start ticks, process group) of a remote pid, None if none."""
        result = await ssh.run(self.conn, ssh.sh(STAT_SCRIPT, str(pid)))
        text = ssh.text(result.stdout)
        fields = text.rpartition(") ")[2].split()
        return (fields[0], fields[19], fields[2]) if len(fields) > 19 else None

    async def aclose(self) -> None:
        for process in self._tail_procs:
            process.close()


def _said(result: asyncssh.SSHCompletedProcess) -> str:
    """The last lines a failed remote command printed, on one line."""
    text = (ssh.text(result.stdout) + ssh.text(result.stderr)).strip().splitlines()
    return " | ".join(text[-3:]) or f"exit status {result.exit_status}"


@contextlib.asynccontextmanager
async def open_host(target: HiveHost, *, accept_new_host_key: bool) -> AsyncIterator[SshHost]:
    """Connect to `target`'s machine and yield its SshHost; the connection ends with the
    block (a daemon it started keeps running)."""
    async with ssh.connect(target, accept_new_host_key=accept_new_host_key) as conn:
        result = await ssh.run(conn, 'printf "%s" "$HOME"')
        user_home = ssh.text(result.stdout).strip() or "/"
        try:
            async with anyio.create_task_group() as tg:
                host = SshHost(conn, target, tg, user_home=user_home)
                try:
                    yield host
                finally:
                    await host.aclose()
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the block's own error, not a group of one
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


def hive_program(host: SshHost) -> str:
    """The remote venv's rbee-hive, which `keeper hive install` puts there."""
    return f"{host.venv()}/bin/rbee-hive"


async def check_installed(host: SshHost) -> None:
    """SshError naming the fix when the remote has no rbee-hive to run."""
    program = hive_program(host)
    result = await ssh.run(host.conn, ssh.command(["test", "-x", program]))
    if result.exit_status == 0:
        return
    raise SshError(
        f"{program} is missing on {host.target.ssh_host}; run `keeper hive install "
        f'{host.target.alias}` or set venv = "…" in its hives config entry'
    )


def remote_hive(
    host: SshHost,
    paths: RbeePaths,
    *,
    port: int,
    queen_url: str,
    beat_interval: float | None = None,
    lend_bytes: int | None = None,
) -> Daemon:
    """The hive of `host`'s machine: its venv's rbee-hive on `port`, beating to
    `queen_url`, reached here at its configured URL or the address we connected to.

    Its credential derives from this home's cluster secret and travels on stdin with its
    own token (SECRET_ENV); the user's RBEE_TOKEN stays here."""
    target = host.target
    name = daemons.hive_daemon_name(target.alias)
    address = host.peer_address()
    url = target.url or f"http://{f'[{address}]' if ':' in address else address}:{port}"
    argv = hive_argv(
        [hive_program(host)],
        target.alias,
        port=port,
        bind=target.bind_address,
        queen_url=queen_url,
        beat_interval=beat_interval,
        lend_bytes=lend_bytes,
    )
    env = {HOME_ENV: str(host.home), CAPTURE_ENV: "1", "PYTHONUNBUFFERED": "1"}
    if target.token:
        env[TOKEN_ENV] = target.token
    env[HIVE_CREDENTIAL_ENV] = hive_credential(cluster_secret(paths), target.alias)
    return Daemon(name, daemons.HIVE_PROGRAM, argv, url, host.logs / f"{name}.log", env)
