"""The RPC servers this hive lends to split models: ggml's RPC server as a child process
(`python -m hive._rpc_host`, from the same llama-cpp-python wheel the workers load), on
127.0.0.1 and a free port, its tensor cache under RBEE_HOME (cache/rpc/).

    servers = RpcServers()
    async with servers.running():          # the hive's lifespan: leaving stops them all
        server = await servers.start()     # narrated; listening once it returns
        use(server.endpoint)               # "127.0.0.1:P", for an SSH forward to reach
        await servers.stop(server)         # when the split unloads

An RPC server never listens beyond loopback: peers reach it through an SSH forward
(hive/_rpc_link.py). It dies with the hive even when the hive is killed with SIGKILL (the
child asks the kernel for PR_SET_PDEATHSIG), and the hive stops it on shutdown. What it
prints (ggml's start-up lines, each client connection) is relayed under the actor
`rpc-server`. ggml has no way to cap what the server reports or allocates: a hive's lent
memory is a budget placement keeps, not a limit the server enforces.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import psutil

from hive.errors import HiveError
from jobs import HIVE_CREDENTIAL_ENV, HOME_ENV, LOOPBACK, TOKEN_ENV, WORKER_CREDENTIAL_ENV
from narration_core import LineSplitter, Narrator, relay_lines
from narration_core.proctree import STOP_GRACE_S

NARRATE = Narrator("rbee-hive")
ACTOR = "rpc-server"  # the child's own lines
READY_TIMEOUT_S = 30.0  # from spawn to listening; ggml starts in well under a second
READY_POLL_S = 0.05
PORT_ATTEMPTS = 3  # free ports picked before giving up (another program may take one)
NO_SOCKET = "Failed to create server socket"  # ggml's line when the port is taken
TAIL_LINES = 5  # the child's last lines kept to explain a failed start
SECRET_ENV = frozenset({TOKEN_ENV, HIVE_CREDENTIAL_ENV, WORKER_CREDENTIAL_ENV})


class RpcServerError(HiveError):
    """Raised when an RPC server cannot be started (no RPC build, no port, it exited)."""


def rpc_cache_dir() -> Path:
    """RBEE_HOME/cache/rpc, else the platform's per-user cache folder's rpc/."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser().resolve() / "cache" / "rpc"
    import platformdirs

    return Path(platformdirs.user_cache_dir("rbee", appauthor=False)) / "rpc"


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(eq=False)
class RpcServer:
    """One running RPC server: its port on 127.0.0.1 and its process."""

    port: int
    process: anyio.abc.Process
    exited: anyio.Event = field(default_factory=anyio.Event)
    returncode: int | None = None
    listening: bool = False  # once it listened: an exit before is start()'s error
    stopping: bool = False  # set by stop(): its exit is then no news
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    @property
    def endpoint(self) -> str:
        """host:port as ggml's RPC client takes it."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return int(self.process.pid)


class RpcServers:
    """The hive's RPC servers; `running()` holds the task group that watches them."""

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        threads: int | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        grace_s: float = STOP_GRACE_S,
    ) -> None:
        self.cache_dir = cache_dir or rpc_cache_dir()
        self.threads = threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1
        self.ready_timeout_s = ready_timeout_s
        self.grace_s = grace_s
        self._servers: dict[int, RpcServer] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def servers(self) -> list[RpcServer]:
        return list(self._servers.values())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RpcServers]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    for server in self.servers:
                        await self.stop(server)
                self._tg = None

    async def start(self) -> RpcServer:
        """Start one server and wait until it listens; raises RpcServerError."""
        if self._tg is None:
            raise RuntimeError("RpcServers.start() outside `async with servers.running()`")
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                server = await self._start_on(free_loopback_port())
            except RpcServerError as exc:
                # The free port was taken between our pick and its bind: pick again.
                if attempt == PORT_ATTEMPTS or NO_SOCKET not in str(exc):
                    raise
                continue
            NARRATE.action("rpc_server_ready").target(server.endpoint).human(
                f"RPC server listening on {server.endpoint} (pid {server.pid})"
            ).emit()
            return server
        raise AssertionError("unreachable")  # pragma: no cover

    async def _start_on(self, port: int) -> RpcServer:
        assert self._tg is not None
        argv = [sys.executable, "-m", "hive._rpc_host", "--endpoint", f"{LOOPBACK}:{port}"]
        argv += ["--cache", str(self.cache_dir), "--parent", str(os.getpid())]
        argv += ["--threads", str(self.threads)]
        NARRATE.action("rpc_server_start").target(f"{LOOPBACK}:{port}").human(
            f"Starting an RPC server on {LOOPBACK}:{port} ({self.threads} threads, tensor "
            f"cache {self.cache_dir})"
        ).emit()
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        # Started from this (the event loop's) thread: PR_SET_PDEATHSIG fires when the
        # thread that forked the child ends, and this one lives as long as the hive.
        process = await anyio.open_process(argv, env=env, stdin=subprocess.DEVNULL)
        server = RpcServer(port, process)
        self._servers[port] = server
        self._tg.start_soon(self._watch, server, name=f"rpc-server {port}")
        try:
            await self._wait_listening(server)
            server.listening = True
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.stop(server)
            raise
        return server

    async def stop(self, server: RpcServer) -> None:
        """SIGTERM, then SIGKILL after the grace; returns once it has exited."""
        server.stopping = True
        if not server.exited.is_set():
            NARRATE.action("rpc_server_stop").target(server.endpoint).human(
                f"Stopping the RPC server on {server.endpoint} (pid {server.pid})"
            ).emit()
            _signal(server, signal.SIGTERM)
            with anyio.move_on_after(self.grace_s):
                await server.exited.wait()
            if not server.exited.is_set():
                _signal(server, signal.SIGKILL)
                await server.exited.wait()
        self._servers.pop(server.port, None)

    async def _wait_listening(self, server: RpcServer) -> None:
        with anyio.move_on_after(self.ready_timeout_s):
            while not server.exited.is_set():
                if _listens(server.pid, server.port):
                    return
                await anyio.sleep(READY_POLL_S)
        said = "; ".join(server.tail) or "it printed nothing"
        if server.exited.is_set():
            raise RpcServerError(
                f"the RPC server for {server.endpoint} exited with code {server.returncode} "
                f"before listening ({said})"
            )
        raise RpcServerError(
            f"the RPC server for {server.endpoint} did not listen within "
            f"{self.ready_timeout_s:.0f} s ({said})"
        )

    async def _watch(self, server: RpcServer) -> None:
        """Relay its output and note its exit; an exit nobody asked for is narrated."""
        origin = f"rpc:{server.port}"
        try:
            async with anyio.create_task_group() as tg:
                for name, stream in (
                    ("stdout", server.process.stdout),
                    ("stderr", server.process.stderr),
                ):
                    if stream is not None:
                        tg.start_soon(_relay, stream, name, origin, server.tail)
            server.returncode = await server.process.wait()
        finally:
            server.exited.set()  # after the relays ended: `tail` holds its last lines
            self._servers.pop(server.port, None)
            if server.listening and not server.stopping:
                NARRATE.action("rpc_server_exit").level("warn").target(server.endpoint).human(
                    f"The RPC server on {server.endpoint} exited with code {server.returncode}"
                ).emit()


async def _relay(
    stream: anyio.abc.ByteReceiveStream, name: str, origin: str, tail: deque[str]
) -> None:
    splitter = LineSplitter()
    async for chunk in stream:
        lines = splitter.feed(chunk)
        tail.extend(lines)
        relay_lines(lines, name, actor=ACTOR, origin=origin)
    lines = splitter.flush()
    tail.extend(lines)
    relay_lines(lines, name, actor=ACTOR, origin=origin)


def _signal(server: RpcServer, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        server.process.send_signal(sig)


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` has a TCP socket listening on 127.0.0.1:`port`."""
    try:
        sockets = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return any(s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == port for s in sockets)
