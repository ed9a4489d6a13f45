"""How a split worker tells a failed RPC peer (worker/_rpc.py, PeerWatch), on a real
loopback connection standing for ggml's: a peer silent while the worker idles is fine, one
silent while it generates is frozen, one that closed the connection is gone. The whole
split's faults, with real hives and ggml: tests/e2e/test_split_faults.py."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.support import wait_until
from worker._rpc import PeerWatch, _silent_s

STALL_S = 0.3

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="a frozen peer is told by Linux's TCP_INFO"
)


@pytest.fixture
def peer() -> Iterator[tuple[str, socket.socket, socket.socket]]:
    """(endpoint, this process's connection to it, the peer's end)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as ours:
            theirs, _ = server.accept()
            with theirs:
                yield f"127.0.0.1:{port}", ours, theirs


def test_a_peer_silent_while_generating_is_frozen_and_one_that_closed_is_gone(
    peer: tuple[str, socket.socket, socket.socket],
) -> None:
    endpoint, ours, theirs = peer
    busy = threading.Event()
    watch = PeerWatch([endpoint], lost=lambda reason: None, busy=busy.is_set, stall_s=STALL_S)
    theirs.sendall(b"x")
    ours.recv(1)
    # Idle for longer than a stall: nothing to say, and not once a step starts either.
    wait_until(
        lambda: (_silent_s(ours.fileno()) or 0.0) > 2 * STALL_S,
        "the connection to be silent past a stall",
    )
    assert watch.check() is None
    busy.set()
    assert watch.check() is None
    # Generating, and the peer says nothing: frozen.
    wait_until(lambda: watch.check() is not None, "the silent peer to be called frozen")
    assert f"its RPC peer {endpoint} stopped answering" in str(watch.check())
    # It answers again: all is well.
    theirs.sendall(b"y")
    ours.recv(1)
    busy.clear()
    assert watch.check() is None
    # Its end closes (the server died): gone, busy or not.
    theirs.close()
    wait_until(lambda: watch.check() is not None, "the closed peer to be called gone")
    assert f"its RPC peer {endpoint} went away" in str(watch.check())
