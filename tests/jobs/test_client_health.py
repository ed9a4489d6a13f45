"""JobClient.health against a port that accepts connections and never answers."""

from __future__ import annotations

import socket

import anyio
import pytest

from jobs.client import JobClient
from jobs.errors import DaemonUnreachable


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
