"""Events/s through one SSE hop vs draining the same events from the in-memory log.

    .venv/bin/python bench/bench_sse.py [--quick]

Baseline (same run): N narration events appended through the job's narration sink and
drained from the in-memory log as SSE frames, no HTTP. Then a child job server narrates
the same N events; once the job has finished (log in memory), one httpx client reads the
stream to `[DONE]`: raw bytes (frames counted) and through JobClient.stream (the batched
SSE decoder in jobs.client). Each round runs the three once, in turn, so load from other
processes hits them alike; each ratio is paired by round, and its median printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _daemons import owned_home
from _sse_server import bench_server, header

from jobs.client import JobClient
from jobs.server import EventStore, MemoryReader
from narration_core import (
    NarrationEvent,
    Narrator,
    narration_context,
    register_job_sink,
    set_stdout_sink,
)


async def baseline(n: int, folder: Path) -> float:
    """Events/s drained from memory (frames built), after appending via the narration sink."""
    set_stdout_sink(lambda event: None)
    store = EventStore(folder)
    log = store.create("job-bench")

    def sink(event: NarrationEvent) -> None:
        log.append("output" if event.stream else "narration", event.to_dict())

    unregister = register_job_sink("job-bench", sink)
    narrate = Narrator("bench")
    with narration_context(job_id="job-bench"):
        for i in range(n):
            narrate.action("tick").human(f"event {i} of the benchmark stream").emit()
    unregister()
    set_stdout_sink(None)
    log.close("completed", {"state": "completed"})
    await store.flush(log)  # readers see only what is in the file (durable before sent)
    reader = MemoryReader(log, 0)
    start = time.perf_counter()
    count = 0
    while not reader.at_end():
        batch = await reader.take()
        count += len(b"".join([e.sse_frame() for e in batch])) and len(batch)
    return count / (time.perf_counter() - start)


async def finished_job(port: int) -> str:
    """A job of the server's N events, once it has finished (its log whole in memory)."""
    async with JobClient(f"http://127.0.0.1:{port}") as client:
        job_id = await client.submit({"operation": "model_list"})
        with anyio.fail_after(60):  # a stuck job fails the bench instead of hanging it
            while (await client.get_job(job_id))["state"] != "completed":  # noqa: ASYNC110
                await anyio.sleep(0.05)
    return job_id


async def over_http(port: int, job_id: str) -> tuple[float, float, int]:
    """Events/s reading the finished job: raw bytes (frames counted), then decoded."""
    url = f"http://127.0.0.1:{port}"
    async with JobClient(url) as client:
        async with httpx.AsyncClient(timeout=120) as http:
            start = time.perf_counter()
            frames = 0
            async with http.stream("GET", f"{url}/v1/jobs/{job_id}/stream") as response:
                tail = b""
                async for chunk in response.aiter_bytes(1 << 18):
                    frames += (tail + chunk).count(b"\nevent: ")
                    tail = chunk[-7:]  # a marker split across chunks is counted once
            raw = frames / (time.perf_counter() - start)
        start = time.perf_counter()
        events = 0
        async for _ in client.stream(job_id):
            events += 1
        parsed = events / (time.perf_counter() - start)
    return raw, parsed, frames


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10k events, 3 rounds (not 100k, 5)")
    quick = parser.parse_args().quick
    n, rounds = (10_000, 3) if quick else (100_000, 5)
    header(f"bench_sse: {n} narration events through one SSE hop, {rounds} interleaved rounds")
    bases, raws, parseds = [], [], []
    with owned_home("rbee-bench-sse-") as home, bench_server(n, home) as (port, _pid):
        job_id = anyio.run(finished_job, port)
        for _ in range(rounds):
            with tempfile.TemporaryDirectory(dir=home) as folder:
                bases.append(anyio.run(baseline, n, Path(folder)))
            raw, parsed, frames = anyio.run(over_http, port, job_id)
            raws.append(raw)
            parseds.append(parsed)
    base = statistics.median(bases)

    def ratio(rates: list[float]) -> float:
        return statistics.median(r / b for r, b in zip(rates, bases, strict=True))

    raw, parsed = statistics.median(raws), statistics.median(parseds)
    print(f"baseline  in-memory drain (frames built):  {base:12,.0f} ev/s  = 1.00")
    print(f"SSE hop   httpx raw bytes, frames counted: {raw:12,.0f} ev/s  = {ratio(raws):.3f}x")
    print(f"SSE hop   JobClient.stream (decoder):  {parsed:12,.0f} ev/s  = {ratio(parseds):.3f}x")
    print(f"(frames seen: {frames}, including the job's own lifecycle events; medians of "
          f"{rounds} rounds, ratios paired by round)")  # fmt: skip


if __name__ == "__main__":
    main()
