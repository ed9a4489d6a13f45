"""A job server for the SSE benchmarks, run as its own process (`python bench/_sse_server.py`).

Serves the real `jobs` routes with two bench handlers: `model_list` narrates --events
events at once; `model_download` narrates them only after `POST /bench/go` (so many
subscribers can connect first). Prints `PORT <n>` once it accepts connections. Its state
lives in --state (the bench's RBEE_HOME, removed with everything else it started).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs.server import Job, ServerConfig, bind_socket, create_app, serve
from narration_core import Narrator, set_stdout_sink

NARRATE = Narrator("bench")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keep-finished", type=int, default=16)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    # The bench measures the stream, not the server's own console: 100k lines on a
    # discarded stdout would only add noise.
    set_stdout_sink(lambda event: None)
    anyio.run(_serve, args.state, args.events, args.keep_finished)


async def _serve(state: Path, n: int, keep_finished: int) -> None:
    go = anyio.Event()

    def burst() -> None:
        for i in range(n):
            NARRATE.action("tick").human(f"event {i} of the benchmark stream").emit()

    async def model_list(op: object, job: Job) -> None:
        burst()

    async def model_download(op: object, job: Job) -> None:
        await go.wait()
        burst()

    async def release(request: Request) -> Response:
        go.set()
        return JSONResponse({"ok": True})

    job_app = create_app(
        ServerConfig("bench", "bench", state),
        {"model_list": model_list, "model_download": model_download},
        routes=[Route("/bench/go", release, methods=["POST"])],
    )
    job_app.service.store.keep_finished = keep_finished
    sock = bind_socket("127.0.0.1", 0)

    async def announce(url: str) -> None:
        print(f"PORT {sock.getsockname()[1]}", flush=True)

    await serve(job_app, sock, on_ready=announce)


@contextlib.contextmanager
def bench_server(events: int, home: Path, *, keep_finished: int = 16) -> Iterator[tuple[int, int]]:
    """Start this server as a child with its state in a new folder of `home` (the bench's
    `_daemons.owned_home`); yields (port, pid) and stops it on exit."""
    import subprocess

    state = tempfile.mkdtemp(prefix="sse-server-", dir=home)
    argv = [sys.executable, __file__, "--events", str(events), "--state", state]
    child = subprocess.Popen(
        [*argv, "--keep-finished", str(keep_finished)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "RBEE_HOME": str(home)},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"bench server did not start: {line!r}")
        yield int(line.split()[1]), child.pid
    finally:
        child.terminate()
        child.wait(timeout=10)


def header(title: str) -> None:
    unbuffered = os.environ.get("PYTHONUNBUFFERED")
    print(f"== {title}")
    print(f"PYTHONUNBUFFERED={'set (' + unbuffered + ')' if unbuffered else 'not set'}; "
          f"python {sys.version.split()[0]}; cores {os.cpu_count()}")  # fmt: skip


if __name__ == "__main__":
    main()
