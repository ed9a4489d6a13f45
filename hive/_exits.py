"""How a worker's end is told: the signal that killed it, the peers no longer there."""

from __future__ import annotations

import signal
import socket
from collections.abc import Sequence

CONNECT_TIMEOUT_S = 2.0  # one look at a peer


def signal_name(number: int) -> str:
    """ "SIGKILL" for 9; "signal N" for a number no signal has here."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def unreachable(endpoints: Sequence[str]) -> list[str]:
    """The `127.0.0.1:P` endpoints nothing listens on any more (connection refused)."""
    gone = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError:
            gone.append(endpoint)
    return gone
