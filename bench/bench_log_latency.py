"""Append -> visible to a waiting reader, in one process: what the event log adds per event.

    .venv/bin/python bench/bench_log_latency.py [--quick]

An emitter task appends one event per millisecond (1k events/s) to a live job log while
the store's flusher runs; a reader task waits on the log (as an SSE pump does) and notes
when each event becomes readable (written to the job's JSONL file). No HTTP, no other
process: the figures are the log's own cost (flusher wake, write, reader wake), which
every hop pays once. Then a burst: N events appended at once, time until all are readable.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).parent))
from _sse_server import header

from jobs.eventlog import EventStore
from jobs.logreaders import MemoryReader

RATE = 1000.0  # events per second, as in bench_relay's latency rounds


async def paced(folder: Path, count: int) -> list[float]:
    """Milliseconds from append to readable, for `count` events at RATE."""
    store = EventStore(folder)
    out: list[float] = []
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        log = store.create("job-lat")
        sent: dict[int, float] = {}

        async def read() -> None:
            reader = MemoryReader(log, 0)
            while not reader.at_end():
                batch = await reader.take()
                now = time.perf_counter()
                out.extend((now - sent[e.seq]) * 1000 for e in batch if e.seq in sent)
                if not batch:
                    await reader.wait()

        tg.start_soon(read)
        start = time.perf_counter()
        for i in range(count):
            await anyio.sleep(max(0.0, start + i / RATE - time.perf_counter()))
            seq = log.append("narration", {"actor": "bench", "human": f"paced event {i}"})
            sent[seq] = time.perf_counter()
        log.close("completed", {"state": "completed"})
        await store.finish(log)
        tg.cancel_scope.cancel()
    return out


async def burst(folder: Path, count: int) -> float:
    """Events/s from the first append of a burst to the last event readable."""
    store = EventStore(folder)
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        log = store.create("job-burst")
        start = time.perf_counter()
        for i in range(count):
            log.append("narration", {"actor": "bench", "human": f"event {i} of the stream"})
            if i % 256 == 0:
                await anyio.lowlevel.checkpoint()
        await log.wait(count - 1)
        seconds = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return count / seconds


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1000 paced, 20k burst")
    quick = parser.parse_args().quick
    count, n = (1000, 20_000) if quick else (3000, 100_000)
    header(f"bench_log_latency: append -> readable, {count} events at 1k/s, burst of {n}")
    with tempfile.TemporaryDirectory() as tmp:
        lat = anyio.run(paced, Path(tmp) / "a", count)
        rate = anyio.run(burst, Path(tmp) / "b", n)
    print(
        f"append -> readable at 1k ev/s: p50 {statistics.median(lat):.3f} ms  "
        f"p99 {pct(lat, 0.99):.3f} ms  max {max(lat):.3f} ms"
    )
    print(f"burst of {n}: {rate:,.0f} ev/s appended and written")


if __name__ == "__main__":
    main()
