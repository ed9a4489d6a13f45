"""Serving a job app: the socket, uvicorn, and a prompt stop on SIGTERM/SIGINT.

    lock, sock = claim(state_dir, host, port)     # the state-folder lock, then the socket
    with lock:
        anyio.run(serve, job_app, sock)            # until SIGTERM/SIGINT

uvicorn's own signal handlers re-raise the signal after shutdown (exit 143) and wait for
open streams before the app can cancel its jobs, so a running job's SSE stream would hold
shutdown up. `JobServer.stop()` cancels the jobs first (their streams then end with
`[CANCELLED]`), and only then asks uvicorn to exit. A second signal exits at once
(status 128 + signal), as a second Ctrl-C does in uvicorn and honcho.

A stop is prompt: uvicorn looks at its exit flag on a 0.1 s tick and its shutdown waits
0.1 s steps for connections, so `JobServer` wakes its loop the moment `stop()` is called
and polls the last connections every few milliseconds. A program's `main` ends with
`exit_process()` once `serve()` has returned and everything is closed, skipping the
interpreter's teardown (~0.1-0.2 s of freeing memory that a `keeper queen stop` would
otherwise wait for).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import anyio
import uvicorn

from jobs import CannotListen, StorageError, check_room, exit_process
from jobs.server._app import JobApp
from jobs.server._registry import lock_state_folder
from narration_core import Narrator
from narration_core.proctree import STOP_GRACE_S

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # stop: cancel jobs, then exit 0
LISTEN_BACKLOG = 2048  # pending connections; SSE fan-out tests open hundreds at once
READY_WAIT_S = 30.0  # how long open_job_server waits for the server to accept connections
LIFESPAN_STOP_S = STOP_GRACE_S  # bound on the lifespan's shutdown after a forced exit
TICK_S = 0.1  # uvicorn's tick: its date header and request limit are checked this often
TICKS_PER_DAY = 864_000  # uvicorn wraps its tick counter here (counter % 10: once a second)
SHUTDOWN_POLL_S = 0.005  # seconds between looks at the connections a stop is closing
SERVER_CLOSE_S = 2.0  # bound on waiting for the listening sockets to close after that


class JobServer(uvicorn.Server):
    """uvicorn serving a JobApp: `ready` is set once it accepts connections; it leaves
    signals to `serve()`, and `stop()` cancels jobs before the connections close."""

    def __init__(self, app: JobApp, *, log_level: str = "warning") -> None:
        config = uvicorn.Config(
            app.asgi,
            lifespan="on",
            log_config=None,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=int(STOP_GRACE_S),
        )
        super().__init__(config)
        self.job_app = app
        self.ready = anyio.Event()
        self.exit_requested = anyio.Event()  # set with should_exit: wakes main_loop

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals are handled by serve(), inside the task group

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()

    async def main_loop(self) -> None:
        """uvicorn's tick loop, woken at once by `stop()` rather than at the next tick."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % TICKS_PER_DAY
            with anyio.move_on_after(TICK_S):
                await self.exit_requested.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown without its fixed 0.1 s waits, and with the lifespan always run.

        Stop accepting, ask each connection to close after its response, wait for them
        and their tasks (cancelled after the graceful timeout; a second stop stops the
        wait), then end the lifespan: ours flushes the job logs and stops the program's
        children, so it runs even after a forced exit (bounded then).
        """
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()
        with anyio.move_on_after(self.config.timeout_graceful_shutdown) as graceful:
            # uvicorn signals no event when its last connection closes: look often.
            while (state.connections or state.tasks) and not self.force_exit:  # noqa: ASYNC110
                await anyio.sleep(SHUTDOWN_POLL_S)
        if graceful.cancelled_caught:
            logging.getLogger("uvicorn.error").error(
                "Cancel %s running task(s), timeout graceful shutdown exceeded", len(state.tasks)
            )
            for task in state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        # Bounded: from Python 3.12.1 wait_closed also waits for every connection to go.
        with anyio.move_on_after(SERVER_CLOSE_S):
            for server in self.servers:
                await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()
            return
        with anyio.move_on_after(LIFESPAN_STOP_S):
            await self.lifespan.shutdown()

    async def stop(self) -> None:
        """Cancel running jobs (bounded wait), then let uvicorn finish and close.

        Called again while stopping, it stops waiting for open connections.
        """
        if self.should_exit:
            self.force_exit = True
            return
        service = self.job_app.service
        if service.is_running:
            await service.cancel_all()
        self.should_exit = True
        self.exit_requested.set()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (SO_REUSEADDR); raises CannotListen (e.g. the port is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off only on accepted sockets
    # that say they are TCP, and with Nagle on, a response's headers and body sent apart
    # wait ~40 ms for the client's delayed ACK on every keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise CannotListen(host, port, exc.strerror or str(exc)) from exc
    return sock


def claim(state_dir: Path, host: str, port: int) -> tuple[IO[bytes], socket.socket]:
    """Lock the state folder, then bind the socket: what a server does before serving.

    Returns the open lock file (hold it, e.g. `with lock:`, until the process exits) and
    the listening socket. Raises StateFolderBusy, StorageError (no room left for the job
    table: the lifespan would fail with a traceback) or CannotListen.
    """
    lock = lock_state_folder(state_dir)
    try:
        if (full := check_room(state_dir)) is not None:
            raise full
        return lock, bind_socket(host, port)
    except (CannotListen, StorageError):
        lock.close()
        raise


def socket_url(sock: socket.socket) -> str:
    """The http:// URL a client uses to reach `sock` (IPv6 hosts bracketed)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    app: JobApp,
    sock: socket.socket,
    *,
    on_ready: Callable[[str], Awaitable[None]] | None = None,
    stop_when: anyio.Event | None = None,
) -> None:
    """Serve `app` on `sock` until SIGTERM or SIGINT (or `stop_when` is set).

    `on_ready(url)` runs once connections are accepted (a program narrates `ready`, starts
    its heartbeats). The first signal cancels running jobs (recorded `cancelled`), then
    stops the server; a second ends the process at once (exit 128 + signal). Returns once
    the lifespan has ended.
    """
    server = JobServer(app)
    narrate = Narrator(app.name)
    url = socket_url(sock)

    async def stop_on_signal() -> None:
        with anyio.open_signal_receiver(*HANDLED_SIGNALS) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping.is_set():
                    narrate.action("stop").level("warn").human(
                        f"{name} again: exiting now, without waiting for jobs or connections"
                    ).emit()
                    exit_process(128 + signum)
                stopping.set()
                narrate.action("stop").human(f"{name}: cancelling running jobs and stopping").emit()
                tg.start_soon(server.stop)

    async def announce_ready() -> None:
        await server.ready.wait()
        if on_ready is not None:
            await on_ready(url)

    async def stop_when_set(event: anyio.Event) -> None:
        await event.wait()
        if not stopping.is_set():
            stopping.set()
            await server.stop()

    stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal)
        if stop_when is not None:
            tg.start_soon(stop_when_set, stop_when)
        tg.start_soon(announce_ready)
        await server.serve(sockets=[sock])
        tg.cancel_scope.cancel()


@asynccontextmanager
async def open_job_server(app: JobApp, sock: socket.socket) -> AsyncIterator[JobServer]:
    """Serve `app` on `sock` in this task until the block ends (jobs cancelled, then shutdown).

    For tests and benchmarks: no signal handling. Yields once connections are accepted.
    """
    server = JobServer(app)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(READY_WAIT_S):
                await server.ready.wait()
            try:
                yield server
            finally:
                with anyio.CancelScope(shield=True):
                    await server.stop()
    finally:
        sock.close()  # uvicorn closes it on a clean shutdown, not when cancelled
