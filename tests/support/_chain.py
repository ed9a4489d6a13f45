"""The whole chain as a user drives it: the real keeper CLI starting a queen and a hive
(which spawns workers) under one RBEE_HOME, on free ports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobs.client import JobClient
from tests.support._keeper import KeeperRunner

BEAT_S = 0.5  # the hive's heartbeat interval (stale after 1.5 s without one)
RUN_DEADLINE_S = 180.0  # one keeper command to its end, a worker's model load included


def free_port() -> int:
    """A loopback port free right now (bound, read and closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Chain:
    """The keeper CLI bound to one RBEE_HOME, a queen port and a hive port.

    `names_queen` puts `--queen-url` on every command; without it the keeper finds the
    queen it started as a user's keeper does (from its pidfile).
    """

    def __init__(
        self,
        home: Path,
        *,
        queen_port: int | None = None,
        hive_port: int | None = None,
        beat_s: float = BEAT_S,
        names_queen: bool = True,
        deadline_s: float = RUN_DEADLINE_S,
    ) -> None:
        self.home = home
        self.keeper = KeeperRunner(home)
        self.queen_port = free_port() if queen_port is None else queen_port
        self.hive_port = free_port() if hive_port is None else hive_port
        self.beat_s = beat_s
        self.deadline_s = deadline_s
        self.queen_url = f"http://127.0.0.1:{self.queen_port}"
        self.flags = ["--queen-url", self.queen_url] if names_queen else []

    def run(self, *args: str, ok: bool = True, stdout: Any = subprocess.PIPE) -> Any:
        """`keeper ARGS` to its end; stdout to a pipe or the file given."""
        result = subprocess.run(
            [sys.executable, "-m", "keeper", *self.flags, *args],
            env=self.keeper.env(),
            stdout=stdout,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=self.deadline_s,
        )
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """`keeper --json ARGS` running, its stdout read line by line."""
        return subprocess.Popen(
            [sys.executable, "-m", "keeper", *self.flags, "--json", *args],
            env=self.keeper.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def infer_json(self, prompt: str, *extra: str) -> list[dict[str, Any]]:
        """`keeper --json infer --no-autostart EXTRA PROMPT`: its events."""
        result = self.run("--json", "infer", "--no-autostart", *extra, prompt)
        return [json.loads(line) for line in result.stdout.splitlines()]

    def start_queen(self) -> None:
        self.run("queen", "start", "--port", str(self.queen_port))

    def start_hive(self) -> None:
        self.run(
            "hive", "start", "--port", str(self.hive_port), "--beat-interval", str(self.beat_s)
        )

    def stop(self) -> None:
        """Stop the hive (and its workers), then the queen; a failed stop is not an error."""
        self.run("hive", "stop", ok=False)
        self.run("queen", "stop", ok=False)

    def hive_pid(self) -> int:
        record = json.loads((self.home / "run" / "hive-localhost.pid").read_text())
        return int(record["pid"])

    async def status(self) -> dict[str, Any]:
        """The queen's `queen_status` result: its hives and their workers."""
        async with JobClient(self.queen_url) as client:
            state: dict[str, Any] = {}

            def keep(event: Any) -> None:
                if event.is_final:
                    state.update(event.data["result"])

            await client.submit_and_stream({"operation": "queen_status"}, keep)
        return state

    async def hives(self) -> list[dict[str, Any]]:
        return list((await self.status())["hives"])

    async def worker(self, worker_id: str) -> dict[str, Any]:
        workers = (await self.status())["workers"]
        return next(w for w in workers if w["worker_id"] == worker_id)
