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

Each measurement runs in rounds that alternate its ways, so load from other processes hits
them alike; ratios are paired by round. Both servers are stopped when the bench ends,
however it ends (`_daemons`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).parent))
from _daemons import owned_home
from _sse_server import header

from jobs.client import JobClient

READY_S = 60.0  # a cold start of a server process on a busy machine
PACED_WARMUP_S = 5.0  # at most, before a paced job emits: until its first reader is there
PACED_SETTLE_S = 0.2  # then: the client behind the queen's relay subscribes about as fast
BURST_YIELD_EVERY = 256  # events the stand-in hive emits between yields to its event loop


# -- the stand-in hive -----------------------------------------------------------------


def serve_hive() -> None:
    """Serve `model_list` (burst of --events) and `model_download` (model="RATExCOUNT":
    COUNT events at RATE per second) on a free port; print `PORT <n>` once serving."""
    from jobs.server import Job, ServerConfig, bind_socket, create_app, open_job_server
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
        # Let every hop subscribe first, so that no event waits for one: this job's reader
        # (the client, or the queen's relay), then the client of the queen's job.
        with anyio.move_on_after(PACED_WARMUP_S):
            while not job.log.readers:  # noqa: ASYNC110 (a count, no event to wait on)
                await anyio.sleep(0.01)
        await anyio.sleep(PACED_SETTLE_S)
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

    # In the bench's home when it has one: removed with it, even if this process is killed.
    with tempfile.TemporaryDirectory(dir=os.environ.get("RBEE_HOME")) as state:
        anyio.run(run, Path(state))


# -- processes -------------------------------------------------------------------------


def start_processes(n: int, home: Path) -> tuple[str, str, int, int]:
    """(hive URL, queen URL, hive pid, queen pid): the stand-in hive and the real queen,
    both serving. `_daemons.owned_home` (whose home this is) stops them."""
    env = {**os.environ, "RBEE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    hive = subprocess.Popen(
        [sys.executable, __file__, "--serve-hive", "--events", str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
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
    return hive_url, queen_url, hive.pid, queen.pid


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


async def throughput(hive: str, queen: str, repeat: int) -> tuple[list[float], list[float], str]:
    """ev/s per round read from the hive directly, and through the queen; a hive job id."""
    direct, relayed = [], []
    op = {"operation": "model_list", "hive_id": "localhost"}
    job_id = ""
    for _ in range(repeat):
        seconds, count, job_id = await read_all(hive, op)
        direct.append(count / seconds)
        seconds, count, _ = await read_all(queen, op)
        relayed.append(count / seconds)
    return direct, relayed, job_id


async def decoding(hive: str, job_id: str, repeat: int) -> list[tuple[float, float, float]]:
    """ev/s reading one finished job: raw bytes (frames counted), batched, parsed; one
    triple per round."""
    import httpx

    rounds = []
    async with httpx.AsyncClient(timeout=120, trust_env=False) as http, JobClient(hive) as client:
        for _ in range(repeat):
            start = time.perf_counter()
            frames, tail = 0, b""
            async with http.stream("GET", f"{hive}/v1/jobs/{job_id}/stream") as response:
                async for chunk in response.aiter_bytes():
                    frames += (tail + chunk).count(b"\nevent: ")
                    tail = chunk[-7:]
            raw = frames / (time.perf_counter() - start)
            start = time.perf_counter()
            count = 0
            async for batch in client.stream_entries(job_id):
                count += len(batch)
            batched = count / (time.perf_counter() - start)
            start = time.perf_counter()
            count = 0
            async for _ in client.stream(job_id):
                count += 1
            rounds.append((raw, batched, count / (time.perf_counter() - start)))
    return rounds


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
    parser.add_argument(
        "--quick", action="store_true", help="5k events x 3 rounds, 2 rounds of 300 paced"
    )
    quick = parser.parse_args().quick
    n, repeat, lat_repeat, paced = (5_000, 3, 2, 300) if quick else (100_000, 3, 3, 3000)
    header(f"bench_relay: {n} events through one relay hop (hive -> queen -> client)")
    with owned_home("rbee-bench-relay-") as home:
        hive, queen, hive_pid, queen_pid = start_processes(n, home)
        directs, relayeds, job_id = anyio.run(throughput, hive, queen, repeat)
        hive_cpu, queen_cpu = (cpu_seconds(hive_pid), cpu_seconds(queen_pid))
        anyio.run(read_all, queen, {"operation": "model_list", "hive_id": "localhost"})
        hive_cpu, queen_cpu = cpu_seconds(hive_pid) - hive_cpu, cpu_seconds(queen_pid) - queen_cpu
        decoded = anyio.run(decoding, hive, job_id, repeat)
        rounds = [  # alternated, so a busy moment of the machine hits both sides alike
            (anyio.run(latencies, hive, paced), anyio.run(latencies, queen, paced))
            for _ in range(lat_repeat)
        ]
    direct, relayed = statistics.median(directs), statistics.median(relayeds)
    hop = statistics.median(r / d for d, r in zip(directs, relayeds, strict=True))
    print(f"throughput direct from the hive:  {direct:12,.0f} ev/s  = 1.00")
    print(f"throughput through the queen:     {relayed:12,.0f} ev/s  = {hop:.2f}x")
    print(
        f"CPU per event, one relayed job: hive (emit + serve) {hive_cpu / n * 1e6:.1f} µs, "
        f"queen (relay + serve) {queen_cpu / n * 1e6:.1f} µs"
    )
    raw, batched, parsed = (statistics.median(r[i] for r in decoded) for i in range(3))
    batched_x, parsed_x = (statistics.median(r[i] / r[0] for r in decoded) for i in (1, 2))
    print(f"decode  raw bytes, frames counted: {raw:12,.0f} ev/s  = 1.00")
    print(f"decode  stream_entries (batched):  {batched:12,.0f} ev/s  = {batched_x:.2f}x")
    print(f"decode  stream (JobEvents):        {parsed:12,.0f} ev/s  = {parsed_x:.2f}x")
    print(f"(throughput and decoding: medians of {repeat} rounds, ratios paired by round)")

    def median_of(side: int, q: float) -> float:
        return statistics.median(pct(pair[side], q) for pair in rounds)

    for side, name in ((0, "direct"), (1, "via queen")):
        print(
            f"latency {name:<10} at 1k ev/s: p50 {median_of(side, 0.5):6.2f} ms  "
            f"p99 {median_of(side, 0.99):6.2f} ms  (median of {lat_repeat} rounds of {paced})"
        )
    print(
        f"added by the hop: p50 {median_of(1, 0.5) - median_of(0, 0.5):+.2f} ms  "
        f"p99 {median_of(1, 0.99) - median_of(0, 0.99):+.2f} ms"
    )


if __name__ == "__main__":
    main()
