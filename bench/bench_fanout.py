"""1,000 concurrent subscribers on one live job: fan-out events/s and server RSS.

    .venv/bin/python bench/bench_fanout.py [--quick]

Subscribers are raw asyncio sockets (one httpx AsyncClient with 1000 streams is O(n^2)).
They all connect, then `POST /bench/go` releases the job, which narrates N events; each
subscriber reads until the terminator. Baseline (same run): one subscriber on a job of
the same size. Each round runs the baseline and then the fan-out on one server, so load
from other processes hits both alike; the ratio (aggregate delivered events/s over the
single-subscriber rate) is paired by round, and its median printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _daemons import owned_home
from _sse_server import bench_server, header

CONNECT_S = 60.0  # every subscriber's stream open, on a loaded machine


async def subscriber(port: int, path: str, connected: asyncio.Event) -> int:
    """Frames read from the job's stream until its terminator; sets `connected` once the
    first bytes arrive (the job's running state: the server has this subscriber)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    frames = 0
    tail = b""
    while True:
        chunk = await reader.read(1 << 18)
        connected.set()
        if not chunk:
            break
        frames += (tail[-7:] + chunk).count(b"\nevent: ")  # markers split across reads too
        tail = (tail + chunk)[-64:]
        if b"data: [" in tail and b"]\n\n" in tail.split(b"data: [")[-1]:
            break
    writer.close()
    return frames


async def deliver(
    http: httpx.AsyncClient, server: psutil.Process, subscribers: int
) -> tuple[float, list[int], float]:
    """Seconds from `POST /bench/go` until every subscriber has the whole job, the frames
    each got, and the server's RSS (MiB) once they were all connected, before the release."""
    port = http.base_url.port
    assert port is not None
    job = (await http.post("/v1/jobs", json={"operation": "model_download", "model": "b"})).json()
    connected = [asyncio.Event() for _ in range(subscribers)]
    tasks = [asyncio.ensure_future(subscriber(port, job["sse_url"], c)) for c in connected]
    await asyncio.wait_for(asyncio.gather(*(c.wait() for c in connected)), CONNECT_S)
    rss = server.memory_info().rss / 2**20
    start = time.perf_counter()
    await http.post("/bench/go")
    counts = await asyncio.gather(*tasks)
    return time.perf_counter() - start, list(counts), rss


async def rounds(port: int, pid: int, subscribers: int, repeat: int) -> None:
    proc = psutil.Process(pid)
    singles, fans, ratios = [], [], []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        rss_idle = proc.memory_info().rss / 2**20
        for _ in range(repeat):
            seconds, (frames,), _ = await deliver(http, proc, 1)
            singles.append(frames / seconds)
            seconds, counts, rss_connected = await deliver(http, proc, subscribers)
            assert len(set(counts)) == 1, f"subscribers saw different counts: {set(counts)}"
            fans.append(sum(counts) / seconds)
            ratios.append(fans[-1] / singles[-1])
        rss_after = proc.memory_info().rss / 2**20
    single, fan = statistics.median(singles), statistics.median(fans)
    print(f"baseline  1 subscriber:      {single:12,.0f} ev/s  = 1.00  ({frames} frames)")
    print(
        f"fan-out   {subscribers} subscribers: {fan:12,.0f} ev/s  = "
        f"{statistics.median(ratios):.2f}x  (every subscriber got {counts[0]} frames; medians "
        f"of {repeat} rounds, ratio paired by round)"
    )
    print(f"server RSS: idle {rss_idle:.1f} MiB, {subscribers} connected (last round) "
          f"{rss_connected:.1f} MiB, after {repeat} rounds {rss_after:.1f} MiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="200 subscribers x 500 events")
    quick = parser.parse_args().quick
    n, subscribers, repeat = (500, 200, 3) if quick else (2_000, 1_000, 5)
    header(f"bench_fanout: {subscribers} subscribers x {n} events on one job, {repeat} rounds")
    with owned_home("rbee-bench-fanout-") as home, bench_server(n, home) as (port, pid):
        asyncio.run(rounds(port, pid, subscribers, repeat))


if __name__ == "__main__":
    main()
