"""JobClient.health against a port that accepts connections and never answers."""

from __future__ import annotations

import socket

import anyio
import anyio.abc
import pytest

from jobs import DaemonUnreachable
from jobs.client import JobClient


@pytest.mark.anyio
async def test_health_of_a_silent_port_fails_within_the_client_timeout() -> None:
    """A health probe gives up after the client's timeout, not the streams' minute-long
    read timeout, so a start waiting on a wedged port says so promptly."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never answers
        port = silent.getsockname()[1]
        async with JobClient(f"http://127.0.0.1:{port}", timeout_s=0.5) as client:
            with anyio.fail_after(10):
                with pytest.raises(DaemonUnreachable) as caught:
                    await client.health()
    assert f"127.0.0.1:{port}" in str(caught.value)


@pytest.mark.anyio
async def test_a_daemon_that_hangs_up_mid_request_is_named_in_words() -> None:
    """A daemon that takes the request and closes the connection without answering (killed
    mid-request) is reported as cut off, in words, not as an exception's repr such as
    `ReadError('')`."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)

        async def hang_up(stream: anyio.abc.SocketStream) -> None:
            await stream.receive()
            await stream.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, hang_up)
            async with JobClient(f"http://127.0.0.1:{port}") as client:
                with anyio.fail_after(10), pytest.raises(DaemonUnreachable) as cut:
                    await client.post("/v1/inference", {"prompt": "hi"})
            tg.cancel_scope.cancel()
    assert "the connection was cut off" in str(cut.value)
    assert "Error(" not in str(cut.value)
