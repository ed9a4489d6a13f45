"""Serving the queen with uvicorn on a socket we bound, with our own signal handling.

uvicorn's own handlers re-raise the signal after shutdown (exit 143) and wait for open
streams before the app can cancel its jobs, so a running job's SSE stream would hold
shutdown up. `QueenServer.stop()` cancels the jobs first (their streams then end with
`[CANCELLED]`), and only then asks uvicorn to exit.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import anyio
import uvicorn
from starlette.applications import Starlette

from jobs.service import JobService
from narration_core.proctree import STOP_GRACE_S


class QueenServer(uvicorn.Server):
    """A uvicorn server whose `ready` event is set once it accepts connections."""

    def __init__(self, app: Starlette) -> None:
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(STOP_GRACE_S),
        )
        super().__init__(config)
        self.app = app
        self.ready = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals are handled by the caller (see queen.__main__)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()

    async def stop(self) -> None:
        """Cancel running jobs (bounded wait), then let uvicorn finish and close."""
        if self.should_exit:
            self.force_exit = True  # asked twice: stop waiting for connections
            return
        service: JobService = self.app.state.service
        if service.is_running:
            await service.cancel_all()
        self.should_exit = True


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; raises OSError (e.g. the port is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
