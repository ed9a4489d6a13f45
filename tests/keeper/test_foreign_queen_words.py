"""What `keeper queen status/stop` says when the server at the queen URL is not this
RBEE_HOME's queen: this home's own hive is named as this home's, not another's."""

from __future__ import annotations

import socket


def test_this_homes_hive_at_the_queen_url_is_called_this_homes(keeper, free_tcp_port: int) -> None:
    """--queen-url pointing at this home's hive: queen status and stop name "hive localhost
    of this RBEE_HOME" (they said "of another RBEE_HOME"), exit 3."""
    with socket.socket() as sock:  # a second free port: where the hive would find a queen
        sock.bind(("127.0.0.1", 0))
        queen_port = sock.getsockname()[1]
    hive_url = f"http://127.0.0.1:{free_tcp_port}"
    started = keeper(
        "--queen-url",
        f"http://127.0.0.1:{queen_port}",
        *("hive", "start", "localhost", "--port", str(free_tcp_port)),
    )
    assert started.returncode == 0, started.stderr
    try:
        for command in ("status", "stop"):
            result = keeper("--queen-url", hive_url, "queen", command)
            assert result.returncode == 3, result.stdout + result.stderr
            assert "hive localhost of this RBEE_HOME" in result.stderr, result.stderr
            assert "another RBEE_HOME" not in result.stderr
    finally:
        keeper("hive", "stop", "localhost")
