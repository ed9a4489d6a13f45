"""The cost of tracing on the token path: tok/s through the queen, OTLP export on and off.

    .venv/bin/python bench/bench_trace.py [--quick]

Starts two queen + hive pairs on free ports under two temporary RBEE_HOMEs (the keeper's
autostart): "plain", and "traced" whose daemons have OTEL_EXPORTER_OTLP_ENDPOINT set to
an OTLP/HTTP receiver in this process (so the queen, the hive and the worker export every
job's spans, docs/tracing.md). Trace ids, `traceparent` on every hop and `hop_job` on every
relayed event are always on, in both: what the switch adds is the export. Each pair warms
a builtin:tiny worker up; then, in interleaved rounds (the order alternating, so a machine
whose load drifts slows both alike), the same `infer` is submitted to each queen with the
job client and its token events read; tok/s = tokens / (last token - submit), and
TTFT from the submit. Prints the medians and the ratio traced / plain.
Goal (issue 23): no measurable drop in tok/s through the queen (ratio >= 0.95).
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))
from _common import conditions, quick_flag
from _daemons import owned_home

PROMPT = "the queen"
SAMPLING = {"max_tokens": 256, "temperature": 0.8, "top_p": 0.95, "top_k": 40, "seed": 1}
QUICK_MAX_TOKENS = 64
WARM = ["--model", "builtin:tiny", "--max-tokens", "4", "hi"]
Timing = tuple[float, float]  # (ttft s, tok/s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def otlp_sink() -> Iterator[tuple[str, list[int]]]:
    """An OTLP/HTTP endpoint on loopback that accepts and counts export requests."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    received = [0]

    async def accept(request: Request) -> Response:
        await request.body()
        received[0] += 1
        return Response(b"", media_type="application/x-protobuf")

    app = Starlette(routes=[Route(p, accept, methods=["POST"]) for p in ("/v1/traces", "/v1/logs")])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", received
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def start_chain(home: Path, extra_env: dict[str, str]) -> str:
    """A queen and hive for `home` (autostart) with a warm builtin:tiny worker; its URL."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "RBEE_HOME": str(home), "NO_COLOR": "1", **extra_env}
    env.pop("RBEE_TOKEN", None)
    subprocess.run(
        [sys.executable, "-m", "keeper", "--queen-url", url, "infer", *WARM],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return url


def once(url: str, sampling: dict[str, float]) -> Timing:
    from jobs.client import JobClient

    async def run() -> Timing:
        async with JobClient(url) as client:
            start = time.perf_counter()
            stamps: list[float] = []
            body = {"operation": "infer", "model": "builtin:tiny", "prompt": PROMPT, **sampling}
            job_id = await client.submit(body)
            async for event in client.stream(job_id):
                if event.kind == "token":
                    stamps.append(time.perf_counter())
        if len(stamps) < 2:
            raise RuntimeError(f"only {len(stamps)} tokens came back from {url}")
        # From the submit, not the first token: the relay hands tokens on in batches, so
        # the gap between the first and last token received can be near zero.
        return stamps[0] - start, len(stamps) / (stamps[-1] - start)

    return anyio.run(run)


def main() -> None:
    quick = quick_flag(__doc__, f"5 rounds of {QUICK_MAX_TOKENS} tokens (not 21 of 256)")
    rounds = 5 if quick else 21
    sampling = {**SAMPLING, "max_tokens": QUICK_MAX_TOKENS} if quick else SAMPLING
    print(f"bench_trace: {conditions()}; {rounds} rounds of {sampling['max_tokens']} tokens")
    with (
        otlp_sink() as (endpoint, received),
        owned_home("rbee-bench-trace-plain-") as plain_home,
        owned_home("rbee-bench-trace-traced-") as traced_home,
    ):
        urls = {
            "plain": start_chain(plain_home, {}),
            "traced": start_chain(traced_home, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}),
        }
        runs: dict[str, list[Timing]] = {name: [] for name in urls}
        for url in urls.values():
            once(url, sampling)  # warm-up
        for i in range(rounds):
            order = list(urls) if i % 2 == 0 else list(reversed(urls))
            for name in order:
                runs[name].append(once(urls[name], sampling))
            load = os.getloadavg()[0]
            got = ", ".join(f"{n} {runs[n][-1][1]:.0f} tok/s" for n in urls)
            print(f"  round {i + 1:2}: {got} (load {load:.1f})")
        for name, timings in runs.items():
            ttft = statistics.median(t[0] for t in timings) * 1000
            rate = statistics.median(t[1] for t in timings)
            print(f"{name:7}: {rate:8.0f} tok/s, TTFT {ttft:6.1f} ms (medians)")
        ratio = statistics.median(t[1] for t in runs["traced"]) / statistics.median(
            t[1] for t in runs["plain"]
        )
        print(f"tok/s traced / plain: {ratio:.3f} (goal >= 0.95); {received[0]} OTLP exports")


if __name__ == "__main__":
    main()
