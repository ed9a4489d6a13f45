"""Append -> visible to a waiting reader, in one process: what the event log adds per event.

    .venv/bin/python bench/bench_log_latency.py [--quick]

An emitter task appends one event per millisecond (1k events/s) to a live job log while
the store's flusher runs; a reader task waits on the log (as an SSE pump does) and notes
when each event becomes readable (written to the job's JSONL file). No HTTP, no other
process: the figures are the log's own cost (flusher wake, write, reader wake), which
every hop pays once. Then a burst: N events appended at once, time until all are readable.

Baseline (same run): the same emitter and reader joined by an anyio memory object stream,
the floor of handing an event from one task to another (no log, no file). Each round runs
the log and the baseline in turn, so load from other processes hits both alike; ratios
are paired by round, and their median printed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).parent))
from _sse_server import header

from jobs.server import EventStore, MemoryReader

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


async def paced_floor(count: int) -> list[float]:
    """Milliseconds from send to received, for `count` events at RATE, task to task."""
    send, receive = anyio.create_memory_object_stream[float](max_buffer_size=math.inf)
    out: list[float] = []

    async def read() -> None:
        async with receive:
            async for sent in receive:
                out.append((time.perf_counter() - sent) * 1000)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        async with send:
            start = time.perf_counter()
            for i in range(count):
                await anyio.sleep(max(0.0, start + i / RATE - time.perf_counter()))
                send.send_nowait(time.perf_counter())
    return out


async def burst_floor(count: int) -> float:
    """Events/s from the first send of a burst to the last one received, task to task."""
    send, receive = anyio.create_memory_object_stream[int](max_buffer_size=math.inf)
    async with anyio.create_task_group() as tg:
        done = anyio.Event()

        async def read() -> None:
            async with receive:
                async for i in receive:
                    if i == count - 1:
                        done.set()

        tg.start_soon(read)
        start = time.perf_counter()
        async with send:
            for i in range(count):
                send.send_nowait(i)
                if i % 256 == 0:
                    await anyio.lowlevel.checkpoint()
            await done.wait()
            seconds = time.perf_counter() - start
    return count / seconds


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 rounds of 500 paced, 20k burst (not 3 of 3000, 100k)",
    )
    quick = parser.parse_args().quick
    count, n, rounds = (500, 20_000, 2) if quick else (3000, 100_000, 3)
    header(
        f"bench_log_latency: append -> readable, {count} events at 1k/s, burst of {n}, "
        f"{rounds} interleaved rounds"
    )
    lats, floors, rates, floor_rates = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            lats.append(anyio.run(paced, Path(tmp) / f"a{r}", count))
            floors.append(anyio.run(paced_floor, count))
            rates.append(anyio.run(burst, Path(tmp) / f"b{r}", n))
            floor_rates.append(anyio.run(burst_floor, n))

    def median_of(runs: list[list[float]], q: float) -> float:
        return statistics.median(pct(run, q) for run in runs)

    def ratio(q: float) -> float:
        return statistics.median(pct(a, q) / pct(b, q) for a, b in zip(lats, floors, strict=True))

    print(
        f"task to task (baseline) at 1k ev/s: p50 {median_of(floors, 0.5):.3f} ms  "
        f"p99 {median_of(floors, 0.99):.3f} ms"
    )
    print(
        f"append -> readable at 1k ev/s:      p50 {median_of(lats, 0.5):.3f} ms  "
        f"p99 {median_of(lats, 0.99):.3f} ms  max {max(max(lat) for lat in lats):.3f} ms  "
        f"= {ratio(0.5):.1f}x / {ratio(0.99):.1f}x the baseline's p50 / p99"
    )
    burst_ratio = statistics.median(a / b for a, b in zip(rates, floor_rates, strict=True))
    print(
        f"burst of {n}: {statistics.median(rates):,.0f} ev/s appended and written "
        f"= {burst_ratio:.2f}x task to task ({statistics.median(floor_rates):,.0f} ev/s)"
    )
    print(f"(medians of {rounds} rounds, ratios paired by round)")


if __name__ == "__main__":
    main()
