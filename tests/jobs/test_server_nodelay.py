"""Connections a job server accepts send small writes at once (no Nagle delay)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from jobs.server import bind_socket

DEADLINE_S = 10.0  # seconds any wait may take on a slow machine


@pytest.mark.anyio
async def test_accepted_connections_have_nodelay() -> None:
    """asyncio turns Nagle off only on sockets that say they are TCP; ours must, or a
    response's headers and body, sent apart, wait ~40 ms for a delayed ACK on every
    keep-alive request (what made `keeper status` take half a second)."""
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    listener = bind_socket("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
    async with server:
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted, DEADLINE_S) != 0
        writer.close()
