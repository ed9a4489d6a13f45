"""Small address checks the programs share, light enough for their entry points (no
uvicorn or Starlette): `--port` parsing and "is this bind address loopback"."""

from __future__ import annotations

import argparse
import ipaddress


def tcp_port(text: str) -> int:
    """An argparse type for --port: 0 (any free port) to 65535."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port; use 0 to 65535")
    return port


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (a server there may skip the token)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
