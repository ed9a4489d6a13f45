"""One relay hop: a hive job's events read through the queen vs straight from the hive.

    .venv/bin/python bench/bench_relay.py [--quick]

A stand-in hive (this script with --serve-hive: the real job-server shell, handlers that
narrate N events at once or at a fixed rate) and the real queen-rbee forwarding to it
(`--hive localhost=<hive>`) run as their own processes. Measured in one run:

- throughput: submit -> last event read, for N events emitted in a hive job, read from
  the hive directly (baseline, 1.00) and through the queen (goal >= 0.7x per hop);
- decoding: a finished job's stream read with the batched decoder (`stream_entries`),
  parsed into JobEvents (`stream`), and as raw bytes (baseline);
- latency: events emitted at 1k/s, arrival minus emission time, direct and through the
  queen; the hop adds the difference (goal: p99 <= 1 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).parent))
from _sse_server import header

from jobs.client import JobClient

READY_S = 60.0  # a cold start of a server process on a busy machine
PACED_WARMUP_S = 1.0  # before a paced job emits: the reader's (and relay's) GET is connected
BURST_YIELD_EVERY = 256  # events the stand-in hive emits between yields to its event loop


# -- the stand-in hive -----------------------------------------------------------------


def serve_hive() -> None:
    """Serve `model_list` (burst of --events) and `model_download` (model="RATExCOUNT":
    COUNT events at RATE per second) on a free port; print `PORT <n>` once serving."""
    from jobs.server import ServerConfig, bind_socket, create_app, open_job_server
    from jobs.service import Job
    from narration_core import Narrator, set_stdout_sink

    parser = argparse.ArgumentParser()
    parser.add_argument("--serve-hive", action="store_true")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    narrate = Narrator("rbee-hive")
    set_stdout_sink(lambda event: None)  # measure the stream, not this process's console

    async def burst(op: Any, job: Job) -> None:
        for i in range(args.events):
            narrate.action("tick").human(f"event {i} of the benchmark stream").emit()
            if i % BURST_YIELD_EVERY == 0:  # a real hive relays a worker's lines as they come
                await anyio.lowlevel.checkpoint()

    async def paced(op: Any, job: Job) -> None:
        rate, count = (float(x) for x in op.model.split("x"))
        await anyio.sleep(PACED_WARMUP_S)  # let every hop subscribe: no event waits for one
        start = time.perf_counter()
        for i in range(int(count)):
            await anyio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            narrate.action("tick").human(f"paced event {i}").emit()

    async def run(state: Path) -> None:
        app = create_app(
            ServerConfig("rbee-hive", "bench", state),
            {"model_list": burst, "model_download": paced},
        )
        sock = bind_socket("127.0.0.1", 0)
        async with open_job_server(app, sock):
            print(f"PORT {sock.getsockname()[1]}", flush=True)
            await anyio.sleep_forever()

    with tempfile.TemporaryDirectory() as state:
        anyio.run(run, Path(state))


# -- processes -------------------------------------------------------------------------


@contextmanager
def processes(n: int, home: Path) -> Iterator[tuple[str, str, int, int]]:
    """(hive URL, queen URL, hive pid, queen pid): the stand-in hive and the real queen."""
    env = {**os.environ, "RBEE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    hive = subprocess.Popen(
        [sys.executable, __file__, "--serve-hive", "--events", str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    queen = None
    try:
        assert hive.stdout is not None
        hive_url = f"http://127.0.0.1:{hive.stdout.readline().split()[1]}"
        log = home / "queen.out"
        with log.open("w") as out:
            queen = subprocess.Popen(
                [sys.executable, "-m", "queen", "--port", "0", "--hive", f"localhost={hive_url}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + READY_S
        queen_url = ""
        while not queen_url:
            if time.monotonic() > deadline:
                raise RuntimeError(f"queen did not start: {log.read_text()}")
            for line in log.read_text().splitlines():
                if "] ready" in line:
                    queen_url = line.rsplit(" ", 1)[-1]
            time.sleep(0.05)
        yield hive_url, queen_url, hive.pid, queen.pid
    finally:
        for child in (queen, hive):
            if child is not None:
                child.terminate()
                child.wait(timeout=15)


# -- measurements ----------------------------------------------------------------------


async def read_all(url: str, operation: dict[str, Any]) -> tuple[float, int, str]:
    """Submit, read every event (batched, undecoded); (seconds, events, job id)."""
    async with JobClient(url) as client:
        start = time.perf_counter()
        job_id = await client.submit(operation)
        count = 0
        async for batch in client.stream_entries(job_id):
            count += len(batch)
        return time.perf_counter() - start, count, job_id


async def throughput(hive: str, queen: str, repeat: int) -> tuple[float, float, str]:
    direct, relayed = [], []
    op = {"operation": "model_list", "hive_id": "localhost"}
    job_id = ""
    for _ in range(repeat):
        seconds, count, job_id = await read_all(hive, op)
        direct.append(count / seconds)
        seconds, count, _ = await read_all(queen, op)
        relayed.append(count / seconds)
    return statistics.median(direct), statistics.median(relayed), job_id


async def decoding(hive: str, job_id: str) -> tuple[float, float, float]:
    """ev/s reading one finished job: raw bytes (frames counted), batched, parsed."""
    import httpx

    async with httpx.AsyncClient(timeout=120, trust_env=False) as http:
        start = time.perf_counter()
        frames, tail = 0, b""
        async with http.stream("GET", f"{hive}/v1/jobs/{job_id}/stream") as response:
            async for chunk in response.aiter_bytes():
                frames += (tail + chunk).count(b"\nevent: ")
                tail = chunk[-7:]
        raw = frames / (time.perf_counter() - start)
    async with JobClient(hive) as client:
        start = time.perf_counter()
        count = 0
        async for batch in client.stream_entries(job_id):
            count += len(batch)
        batched = count / (time.perf_counter() - start)
        start = time.perf_counter()
        count = 0
        async for _ in client.stream(job_id):
            count += 1
        parsed = count / (time.perf_counter() - start)
    return raw, batched, parsed


async def latencies(url: str, count: int) -> list[float]:
    """Milliseconds from emission (the event's ts) to arrival, at 1k events/s."""
    import json

    out: list[float] = []
    async with JobClient(url) as client:
        job_id = await client.submit(
            {"operation": "model_download", "hive_id": "localhost", "model": f"1000x{count}"}
        )
        async for batch in client.stream_entries(job_id):
            now = time.time()
            for entry in batch:
                if entry.kind == "narration" and '"tick"' in entry.data_json:
                    out.append((now - json.loads(entry.data_json)["ts"]) * 1000)
    return out


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    if "--serve-hive" in sys.argv:
        serve_hive()
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10k events, 1 run, 500 paced")
    quick = parser.parse_args().quick
    n, repeat, paced = (10_000, 1, 500) if quick else (100_000, 3, 3000)
    header(f"bench_relay: {n} events through one relay hop (hive -> queen -> client)")
    with tempfile.TemporaryDirectory() as home, processes(n, Path(home)) as running:
        hive, queen, hive_pid, queen_pid = running
        direct, relayed, job_id = anyio.run(throughput, hive, queen, repeat)
        hive_cpu, queen_cpu = (cpu_seconds(hive_pid), cpu_seconds(queen_pid))
        anyio.run(read_all, queen, {"operation": "model_list", "hive_id": "localhost"})
        hive_cpu, queen_cpu = cpu_seconds(hive_pid) - hive_cpu, cpu_seconds(queen_pid) - queen_cpu
        raw, batched, parsed = anyio.run(decoding, hive, job_id)
        rounds = [  # alternated, so a busy moment of the machine hits both sides alike
            (anyio.run(latencies, hive, paced), anyio.run(latencies, queen, paced))
            for _ in range(repeat)
        ]
    print(f"throughput direct from the hive:  {direct:12,.0f} ev/s  = 1.00")
    print(f"throughput through the queen:     {relayed:12,.0f} ev/s  = {relayed / direct:.2f}x")
    print(
        f"CPU per event, one relayed job: hive (emit + serve) {hive_cpu / n * 1e6:.1f} µs, "
        f"queen (relay + serve) {queen_cpu / n * 1e6:.1f} µs"
    )
    print(f"decode  raw bytes, frames counted: {raw:12,.0f} ev/s  = 1.00")
    print(f"decode  stream_entries (batched):  {batched:12,.0f} ev/s  = {batched / raw:.2f}x")
    print(f"decode  stream (JobEvents):        {parsed:12,.0f} ev/s  = {parsed / raw:.2f}x")

    def median_of(side: int, q: float) -> float:
        return statistics.median(pct(pair[side], q) for pair in rounds)

    for side, name in ((0, "direct"), (1, "via queen")):
        print(
            f"latency {name:<10} at 1k ev/s: p50 {median_of(side, 0.5):6.2f} ms  "
            f"p99 {median_of(side, 0.99):6.2f} ms  (median of {repeat} rounds of {paced})"
        )
    print(
        f"added by the hop: p50 {median_of(1, 0.5) - median_of(0, 0.5):+.2f} ms  "
        f"p99 {median_of(1, 0.99) - median_of(0, 0.99):+.2f} ms"
    )


if __name__ == "__main__":
    main()
