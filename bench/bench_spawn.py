"""`keeper worker spawn --model builtin:tiny` until the worker is ready, median of N.

    .venv/bin/python bench/bench_spawn.py [--quick]

The real chain on free ports under a temporary RBEE_HOME: the keeper starts the queen
and a local hive, downloads builtin:tiny once, then spawns and stops a worker N times.
Baseline (same run): `keeper status`, one keeper round trip through the queen with no
hive work, so the ratio shows what spawning itself costs. Each round runs the status and
then a spawn, so load from other processes hits both alike; the ratio is paired by round.
Everything started is stopped when the bench ends, however it ends (`_daemons`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _daemons import owned_home
from _sse_server import header


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keeper(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"keeper {' '.join(args)} failed: {result.stderr or result.stdout}")
    return time.perf_counter() - start, result


def result_of(stdout: str) -> dict[str, Any]:
    """The final state's result in `--json` output."""
    for line in reversed(stdout.splitlines()):
        event = json.loads(line)
        if event.get("event") == "state" and "result" in event:
            return dict(event["result"] or {})
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 spawns instead of 10")
    n = 3 if parser.parse_args().quick else 10
    header(f"bench_spawn: keeper worker spawn --model builtin:tiny until ready, {n} rounds")
    with owned_home("rbee-bench-spawn-") as home:
        env = {**os.environ, "RBEE_HOME": str(home), "NO_COLOR": "1"}
        env.pop("RBEE_QUEEN_URL", None)
        keeper(env, "queen", "start", "--port", str(free_port()))
        keeper(env, "hive", "start", "--port", str(free_port()))
        keeper(env, "model", "download", "builtin:tiny")
        statuses, spawns = [], []
        for _ in range(n):
            statuses.append(keeper(env, "status")[0])
            seconds, result = keeper(env, "--json", "worker", "spawn", "--model", "builtin:tiny")
            spawns.append(seconds)
            worker_id = result_of(result.stdout).get("worker_id")
            if worker_id:
                keeper(env, "worker", "stop", str(worker_id))
    baseline, spawn = statistics.median(statuses), statistics.median(spawns)
    ratio = statistics.median(s / b for s, b in zip(spawns, statuses, strict=True))
    print(f"baseline  keeper status (one round trip): {baseline * 1000:8.0f} ms  = 1.00")
    print(f"worker spawn until ready, median:        {spawn * 1000:8.0f} ms  = {ratio:.2f}x")
    print(f"(spawns: {', '.join(f'{s * 1000:.0f}' for s in spawns)} ms; ratio paired by round)")


if __name__ == "__main__":
    main()
