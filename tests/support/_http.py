"""A server that speaks HTTP and knows nothing of rbee."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

WAIT_S = 30.0  # deadline for http.server to come up on a loaded 2-core machine


@contextlib.contextmanager
def foreign_http_server(port: int, folder: Path) -> Iterator[str]:
    """Python's http.server on `port`: answers HTTP, knows nothing of rbee (501 for POST)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT_S)
