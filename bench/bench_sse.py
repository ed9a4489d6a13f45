"""Events/s through one SSE hop vs draining the same events from the in-memory log.

    .venv/bin/python bench/bench_sse.py [--quick]

Baseline (same run): N narration events appended through the job's narration sink and
drained from the in-memory log as SSE frames, no HTTP. Then a child job server narrates
the same N events; once the job has finished (log in memory), one httpx client reads the
stream to `[DONE]`: raw bytes (frames counted) and through JobClient.stream (the batched
SSE decoder in jobs.decoder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _sse_server import bench_server, header

from jobs.client import JobClient
from jobs.eventlog import EventStore
from jobs.logreaders import MemoryReader
from narration_core import Narrator, narration_context, register_job_sink, set_stdout_sink


async def baseline(n: int, folder: Path) -> float:
    """Events/s drained from memory (frames built), after appending via the narration sink."""
    set_stdout_sink(lambda event: None)
    store = EventStore(folder)
    log = store.create("job-bench")
    unregister = register_job_sink(
        "job-bench", lambda e: log.append("output" if e.stream else "narration", e.to_dict())
    )
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


async def over_http(port: int) -> tuple[float, float, int]:
    url = f"http://127.0.0.1:{port}"
    async with JobClient(url) as client:
        job_id = await client.submit({"operation": "model_list"})
        while (await client.get_job(job_id))["state"] != "completed":  # noqa: ASYNC110
            await anyio.sleep(0.05)
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
    parser.add_argument("--quick", action="store_true", help="10k events instead of 100k")
    n = 10_000 if parser.parse_args().quick else 100_000
    header(f"bench_sse: {n} narration events through one SSE hop")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        base = anyio.run(baseline, n, Path(tmp))
    with bench_server(n) as (port, _pid):
        raw, parsed, frames = anyio.run(over_http, port)
    print(f"baseline  in-memory drain (frames built):  {base:12,.0f} ev/s  = 1.00")
    print(f"SSE hop   httpx raw bytes, frames counted: {raw:12,.0f} ev/s  = {raw / base:.3f}x")
    print(f"SSE hop   JobClient.stream (decoder):  {parsed:12,.0f} ev/s  = {parsed / base:.3f}x")
    print(f"(frames seen: {frames}, including the job's own lifecycle events)")


if __name__ == "__main__":
    main()
