"""1,000 concurrent subscribers on one live job: fan-out events/s and server RSS.

    .venv/bin/python bench/bench_fanout.py [--quick]

Subscribers are raw asyncio sockets (one httpx AsyncClient with 1000 streams is O(n^2)).
They all connect, then `POST /bench/go` releases the job, which narrates N events; each
subscriber reads until the terminator. Baseline (same run): one subscriber on a job of
the same size. Ratio = aggregate delivered events/s over the single-subscriber rate.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _sse_server import bench_server, header


async def subscriber(port: int, path: str, connected: asyncio.Event | None = None) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    frames = 0
    tail = b""
    while True:
        chunk = await reader.read(1 << 18)
        if not chunk:
            break
        frames += (tail[-7:] + chunk).count(b"\nevent: ")  # markers split across reads too
        tail = (tail + chunk)[-64:]
        if b"data: [" in tail and b"]\n\n" in tail.split(b"data: [")[-1]:
            break
    writer.close()
    return frames


async def fan_out(port: int, pid: int, n: int, subscribers: int, single: float) -> None:
    proc = psutil.Process(pid)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url) as http:
        job = (
            await http.post("/v1/jobs", json={"operation": "model_download", "model": "bench"})
        ).json()
        rss_idle = proc.memory_info().rss / 2**20
        tasks = [
            asyncio.ensure_future(subscriber(port, job["sse_url"])) for _ in range(subscribers)
        ]
        while True:  # wait until every stream is open: the running state event was sent to all
            await asyncio.sleep(0.2)
            if len(proc.net_connections()) >= subscribers:
                break
        rss_connected = proc.memory_info().rss / 2**20
        start = time.perf_counter()
        await http.post("/bench/go")
        counts = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        rss_after = proc.memory_info().rss / 2**20
    total = sum(counts)
    rate = total / elapsed
    assert len(set(counts)) == 1, f"subscribers saw different counts: {sorted(set(counts))}"
    print(
        f"fan-out   {subscribers} subscribers: {rate:12,.0f} ev/s  = {rate / single:.2f}x "
        f"({total:,} frames in {elapsed:.2f} s, every subscriber got {counts[0]})"
    )
    print(f"server RSS: idle {rss_idle:.1f} MiB, {subscribers} connected {rss_connected:.1f} MiB, "
          f"after {rss_after:.1f} MiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="200 subscribers x 500 events")
    quick = parser.parse_args().quick
    n, subscribers = (500, 200) if quick else (2_000, 1_000)
    header(f"bench_fanout: {subscribers} subscribers x {n} events on one job")
    with bench_server(n) as (port, pid):
        single = asyncio.run(_single(port, n))
    with bench_server(n) as (port, pid):
        asyncio.run(fan_out(port, pid, n, subscribers, single))


async def _single(port: int, n: int) -> float:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        job = (
            await http.post("/v1/jobs", json={"operation": "model_download", "model": "bench"})
        ).json()
        task = asyncio.ensure_future(subscriber(port, job["sse_url"]))
        await asyncio.sleep(0.5)  # bench only: let the single subscriber connect
        start = time.perf_counter()
        await http.post("/bench/go")
        frames = await task
    rate = frames / (time.perf_counter() - start)
    print(f"baseline  1 subscriber:      {rate:12,.0f} ev/s  = 1.00  ({frames} frames)")
    return rate


if __name__ == "__main__":
    main()
