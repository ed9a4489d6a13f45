"""Replaying a finished 100k-event job from disk: time to first byte, total, server RSS.

    .venv/bin/python bench/bench_replay.py [--quick]

The child job server keeps no finished log in memory (--keep-finished 0), so every replay
streams the JSONL file back in chunks. Baseline (same run): reading and splitting that
same file locally, the floor any replay has to pay, timed just before each replay (rounds
interleaved, so load from other processes hits both alike). RSS is the server's, before
the first replay and after each, to show memory stays flat.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio
import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _daemons import owned_home
from _sse_server import bench_server, header

from jobs.client import JobClient


def mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def replay(port: int, pid: int, n: int, rounds: int) -> None:
    url = f"http://127.0.0.1:{port}"
    async with JobClient(url) as client:
        job_id = await client.submit({"operation": "model_list"})
        with anyio.fail_after(60):  # a stuck job fails the bench instead of hanging it
            while (await client.get_job(job_id))["state"] != "completed":  # noqa: ASYNC110
                await anyio.sleep(0.05)
    # The log file lives in the server's temporary state folder; find it through /proc.
    files = [f.path for f in psutil.Process(pid).open_files() if f.path.endswith(".sqlite3")]
    log = Path(files[0]).parent / "joblogs" / f"{job_id}.jsonl"
    # The registry says "completed" a moment before the final flush lands on disk (readers
    # are served from memory until it has); wait for the whole file before measuring.
    with anyio.fail_after(60):
        while not log.exists() or log.read_bytes().count(b"\n") < n:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    print(f"log file: {log.stat().st_size / 2**20:.1f} MiB, {n} lines or more")
    print(f"server RSS before replay: {mib(pid):7.1f} MiB")
    async with httpx.AsyncClient(timeout=120) as http:
        for attempt in range(rounds):
            start = time.perf_counter()
            lines = log.read_bytes().count(b"\n")  # the baseline, in the same round
            local = time.perf_counter() - start
            start = time.perf_counter()
            first = None
            frames = 0
            async with http.stream("GET", f"{url}/v1/jobs/{job_id}/stream") as response:
                tail = b""
                async for chunk in response.aiter_bytes(1 << 18):
                    if first is None:
                        first = time.perf_counter() - start
                    frames += (tail + chunk).count(b"\nevent: ")
                    tail = chunk[-7:]  # a marker split across chunks is counted once
            total = time.perf_counter() - start
            print(
                f"replay {attempt + 1}: first byte {first:6.3f} s, total {total:6.3f} s "
                f"= {total / local:5.1f}x baseline (local read+split {local:6.3f} s, {lines} "
                f"lines), {frames / total:10,.0f} ev/s, server RSS {mib(pid):7.1f} MiB"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10k events instead of 100k")
    n = 10_000 if parser.parse_args().quick else 100_000
    header(f"bench_replay: replay of a finished {n}-event job from disk, 3 interleaved rounds")
    with owned_home("rbee-bench-replay-") as home, bench_server(n, home, keep_finished=0) as ids:
        anyio.run(replay, *ids, n, 3)


if __name__ == "__main__":
    main()
