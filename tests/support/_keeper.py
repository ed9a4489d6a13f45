"""Running the real keeper CLI as a subprocess, as a user or a CI script would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil

from keeper.daemons import PidFile
from tests.support._waiting import wait_until


class KeeperRunner:
    """`keeper(...)` runs `python -m keeper ARGS` with RBEE_HOME set and returns the result."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RBEE_HOME"] = str(self.home)
        env.pop("RBEE_QUEEN_URL", None)
        env.pop("RBEE_TOKEN", None)
        env["NO_COLOR"] = "1"
        return env

    def __call__(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keeper", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


def start_in_background(runner: KeeperRunner, *args: str) -> subprocess.Popen[str]:
    """`keeper ARGS` running on its own (Ctrl-C live, as in a terminal), output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "keeper", *args],
        env=runner.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def freeze_once_spawned(pidfile: PidFile) -> psutil.Process:
    """The daemon `pidfile` names, frozen (SIGSTOP) as soon as the pidfile appears: spawned,
    still importing, not yet bound to its port."""
    wait_until(lambda: pidfile.read() is not None, "the pidfile")
    record = pidfile.read()
    assert record is not None
    frozen = psutil.Process(record.pid)
    frozen.suspend()
    return frozen


def keeper_into_a_left_pipe(args: Sequence[str], env: dict[str, str]) -> tuple[int, str]:
    """`python -m keeper ARGS` with stdout a pipe whose reader left before the keeper wrote
    a byte (`| head` done already): its exit code and stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "keeper", *args],
            env=env,
            stdout=write,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    return result.returncode, result.stderr


# Never needed to ask the queen something and print the answer: the event loop (the
# keeper follows jobs with the blocking client), pydantic (the queen validates), the
# live view, and the server and SSH stacks.
NOT_FOR_A_QUERY = (
    "asyncio",
    "anyio._backends._asyncio",
    "pydantic",
    "rich.live",
    "keeper.output._live",
    "uvicorn",
    "starlette",
    "asyncssh",
)
NOT_FOR_HELP = ("httpx", "httpcore", "rich", "anyio", "jobs.client", *NOT_FOR_A_QUERY)


def imported_by(
    keeper: KeeperRunner, *args: str
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `python -X importtime -m keeper ARGS`; its result and the modules it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keeper", *args],
        env=keeper.env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    modules = {
        line.rpartition("|")[2].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    return result, modules
