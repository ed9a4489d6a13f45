"""Schemathesis settings shared by the OpenAPI fuzz tests of every daemon.

Each daemon's test fuzzes its own /openapi.json against a live server of it; what must hold
is the same for all: no 5xx, documented statuses, bodies and headers of the documented
shape, invalid input refused, 405s with Allow.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support._chain import free_port

START_DEADLINE_S = 60.0  # a daemon (a worker loading its model) on a loaded 2-core machine

CHECKS = (  # what must hold; the rest (auth, stateful, resource checks) do not apply here
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "unsupported_method",
)


def fuzz_config(
    *,
    max_examples: int,
    accepted: list[Any],
    server_errors: list[Any] | None = None,
    operations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A schemathesis config: every check of CHECKS; `accepted` are the statuses a request
    the document calls valid may get (positive data acceptance); `server_errors` the
    statuses besides 2xx and 4xx that are documented answers, not server errors."""
    return {
        "generation": {"max-examples": max_examples, "mode": "all"},
        "phases": {"stateful": {"enabled": False}},
        "operations": operations or [],
        "checks": {
            "enabled": False,
            **{name: {"enabled": True} for name in CHECKS},
            "not_a_server_error": {
                "enabled": True,
                "expected-statuses": ["2XX", "4XX", *(server_errors or [])],
            },
            "positive_data_acceptance": {"enabled": True, "expected-statuses": accepted},
        },
    }


@contextlib.contextmanager
def served_for_fuzzing(
    program: str, home: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`python -m <program> --port P ARGS` with RBEE_HOME=home (and `env`), until its
    /health says `ready` or `ok`; yields its URL, and stops it (SIGTERM) afterwards.
    Synchronous, for schemathesis' synchronous calls; its stderr is quoted if it dies."""
    port = free_port()
    argv = [sys.executable, "-m", program, "--port", str(port), *args]
    full_env = {**os.environ, **(env or {}), "RBEE_HOME": str(home)}
    errors = home / f"{program}.stderr"
    with errors.open("wb") as stderr:
        process = subprocess.Popen(argv, env=full_env, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while not _ready(url):
            assert process.poll() is None, errors.read_text()
            assert time.monotonic() < deadline, f"{program} did not get ready"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).json().get("status") in ("ready", "ok")
    except (httpx.TransportError, ValueError):
        return False
