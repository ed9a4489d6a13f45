"""Server RSS over a long, busy `queen_status` watch: flat, since a running job keeps only a
bounded tail of its log in memory (older events are read back from its JSONL file).

    .venv/bin/python bench/bench_memory.py [--quick] [--jobs N] [--seconds S]

Starts the real queen-rbee (own RBEE_HOME), submits N watch jobs at the 0.01 s floor, waits
until every job has logged enough events to fill its memory tail (2 x MEMORY_TAIL), then
samples the queen's RSS for S seconds. Prints RSS at both ends (the start is the baseline),
their ratio, the highest sample, and the events logged meanwhile (a log held whole in
memory grows ~0.6 KB per event). The warm-up is fixed by the watch's 100 events/s per job:
about 22 s, whatever N and S; --quick shortens the rest.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _daemons import owned_home
from _sse_server import header

from jobs.server import MEMORY_TAIL
from narration_core import CAPTURE_ENV, parse_line

TAIL_FULL = 2 * MEMORY_TAIL + 100  # events per job after which a log's memory stops growing
READY_S = 30.0  # a cold interpreter on a busy 2-core machine
SAMPLE_EVERY_S = 0.5  # RSS samples while the watches run
# The queen ends a watch nobody streams after its watch_idle_s (60 s): by then every tail
# must be full, or the warm-up would wait for events that never come.
WARM_UP_S = 55.0


def start_queen(home: str) -> tuple[subprocess.Popen[bytes], str]:
    """queen-rbee with its stdout in a log file (as `keeper queen start` runs it), once ready."""
    env = {**os.environ, "RBEE_HOME": home, CAPTURE_ENV: "1"}  # flush per line
    log = Path(home) / "queen.out"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "queen", "--port", "0"], env=env, stdout=out
        )
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline and child.poll() is None:
        for line in log.read_text().splitlines():
            event = parse_line(line)
            if event is not None and event.action == "ready":
                return child, event.human.rsplit(" ", 1)[-1]
        time.sleep(0.05)
    child.kill()
    raise RuntimeError(f"queen-rbee did not get ready; see {log}")


def counts(http: httpx.Client, job_ids: list[str]) -> list[int]:
    return [http.get(f"/v1/jobs/{job_id}").json().get("events", 0) for job_id in job_ids]


def events(http: httpx.Client, job_ids: list[str]) -> int:
    return sum(counts(http, job_ids))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="4 jobs for 5 s (not 8 for 60 s)")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 60.0)
    jobs = args.jobs or (4 if args.quick else 8)
    header(f"bench_memory: {jobs} queen_status watch jobs at 0.01 s for {seconds:g} s")
    with owned_home("rbee-bench-memory-") as home:
        child, url = start_queen(str(home))
        proc = psutil.Process(child.pid)
        watch = {"operation": "queen_status", "watch": True, "interval_s": 0.01}
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as http:
            ids = [http.post("/v1/jobs", json=watch).json()["job_id"] for _ in range(jobs)]
            deadline = time.monotonic() + WARM_UP_S
            while (least := min(counts(http, ids))) < TAIL_FULL:  # warm-up: every tail full
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"bench_memory: a watch logged only {least} of {TAIL_FULL} events in "
                        f"{WARM_UP_S:g} s (the machine is too busy); try fewer --jobs"
                    )
                time.sleep(0.5)
            rss_start, events_start = proc.memory_info().rss, events(http, ids)
            end = time.monotonic() + seconds
            peak = rss_start
            while time.monotonic() < end:
                time.sleep(min(SAMPLE_EVERY_S, max(0.0, end - time.monotonic())))
                peak = max(peak, proc.memory_info().rss)
            rss_end, events_end = proc.memory_info().rss, events(http, ids)
            for job_id in ids:
                http.delete(f"/v1/jobs/{job_id}")
    logged = events_end - events_start
    print(f"RSS after warm-up: {rss_start / 2**20:8.1f} MiB  ({events_start:,} events logged)")
    print(f"RSS at the end:    {rss_end / 2**20:8.1f} MiB  ({events_end:,} events logged)")
    print(f"RSS highest:       {peak / 2**20:8.1f} MiB  (sampled every {SAMPLE_EVERY_S:g} s)")
    print(f"ratio end/start:   {rss_end / rss_start:8.3f}   (+{logged:,} events in {seconds:g} s; "
          f"{(rss_end - rss_start) / max(logged, 1):,.0f} bytes of RSS per event)")  # fmt: skip


if __name__ == "__main__":
    main()
