"""llm-worker-rbee: one GGUF model loaded through llama.cpp, served over HTTP.

    llm-worker-rbee --model PATH --port N --device cpu|cuda:N --worker-id ID [--hive-url URL]
                    [--parallel N] [--threads N] [--ctx-size TOKENS]
                    [--rpc HOST:PORT ...] [--tensor-split SHARES]

With --rpc (repeatable) the model is split: each ggml RPC server is registered as a device
before the model loads and every layer is offloaded, in the proportions --tensor-split
gives (comma-separated, in device order: the RPC servers, then this machine's GPUs or, on
a cpu worker, its CPU; see docs/splitting.md).

Narrates `startup` and `model_load` before its server exists (the hive relays those lines
into the spawn job), then serves /health: `loading` until the model is in memory, then
`ready`. A model that does not load ends the worker with exit 1 and the reason as its
last line. The worker exits when its parent (the hive) dies, so a killed hive leaves no
worker behind. SIGTERM/SIGINT stop it (exit 0).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from jobs import LOOPBACK, WORKER_CREDENTIAL_ENV
from narration_core import Narrator

if TYPE_CHECKING:
    from worker.engine import Engine

NARRATE = Narrator("llm-worker-rbee")
EXIT_FAILED = 1  # the model did not load, the port was taken, or the hive died
EXIT_USAGE = 2
PARENT_POLL_S = 0.5  # how often the worker checks that its hive still lives
PROGRESS_EVERY_S = 1.0  # a long load says how far it is at most this often


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="llm-worker-rbee",
        description="rbee inference worker: loads one GGUF model and serves it over HTTP.",
    )
    parser.add_argument("--model", required=True, help="path to a .gguf file")
    parser.add_argument("--port", type=int, required=True, help="HTTP port the hive assigned")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default %(default)s)")
    parser.add_argument("--worker-id", default=None, help="id the hive knows this worker by")
    parser.add_argument("--hive-url", default=None, help="the hive that spawned this worker")
    parser.add_argument("--bind", default=LOOPBACK, help="address to listen on")
    parser.add_argument(
        "--state-dir", default=None, help="state folder it locks (default: state/workers/ID)"
    )
    parser.add_argument(
        "--parallel",
        type=_positive,
        default=None,
        help="requests generated at once, in one context (default 2 on a CPU, 4 on a GPU)",
    )
    parser.add_argument(
        "--threads", type=_positive, default=None, help="CPU threads (default: physical cores)"
    )
    parser.add_argument(
        "--ctx-size",
        type=_positive,
        default=None,
        help="context tokens per slot (default 4096, at most the model's trained window)",
    )
    parser.add_argument(
        "--rpc",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a ggml RPC server to split the model onto (repeat for each)",
    )
    parser.add_argument(
        "--rpc-names",
        type=lambda text: text.split(","),
        default=None,
        metavar="HIVES",
        help="the hives lending the --rpc servers, in their order, comma-separated (named "
        "in messages about them)",
    )
    parser.add_argument(
        "--tensor-split",
        type=_shares,
        default=None,
        metavar="SHARES",
        help="each device's share of the layers, e.g. 3,1 (default: equal); needs --rpc",
    )
    args = parser.parse_args(argv)
    if args.tensor_split is not None and not args.rpc:
        parser.error("--tensor-split splits the model across --rpc servers: give them too")
    if args.rpc_names is not None and len(args.rpc_names) != len(args.rpc):
        parser.error("--rpc-names names each --rpc server: give one name per server")
    return args


def _shares(text: str) -> list[float]:
    try:
        shares = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated numbers") from None
    if any(not share >= 0 for share in shares) or sum(shares) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: shares are >= 0 and not all 0")
    return shares


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Its own credential, from the hive that spawned it: every route but /health needs it.
    # Taken out of the environment so nothing the model's code starts can read it.
    credential = os.environ.pop(WORKER_CREDENTIAL_ENV, "").strip()
    if not credential:
        print(
            f"llm-worker-rbee: {WORKER_CREDENTIAL_ENV} is not set; workers are started by "
            "rbee-hive, which gives each its credential: use `keeper worker spawn`",
            file=sys.stderr,
        )
        sys.exit(EXIT_USAGE)
    worker_id = args.worker_id or f"w-{args.port}"
    model = Path(args.model).expanduser()
    parent = os.getppid()
    NARRATE.action("startup").target(worker_id).human(
        f"Worker {worker_id} starting: {model.name} on {args.device}, port {args.port}"
        + (f", hive {args.hive_url}" if args.hive_url else "")
    ).emit()
    from jobs import RbeePaths
    from jobs.server import run_daemon
    from worker.errors import WorkerError

    if args.state_dir:
        state_dir = Path(args.state_dir)
    else:
        state_dir = RbeePaths.resolve().ensure().state / "workers" / worker_id

    def report(reason: str) -> None:
        NARRATE.action("failed").level("error").human(reason).emit()

    # A clean stop skips the interpreter's teardown (freeing the model's memory), which
    # the hive's stop would otherwise wait for.
    run_daemon(
        "llm-worker-rbee",
        state_dir,
        args.bind,
        args.port,
        lambda sock: _serve(args, worker_id, model, parent, sock, state_dir, credential),
        report=report,
        busy_exit=EXIT_FAILED,
        fatal=(WorkerError,),
    )


async def _serve(
    args: argparse.Namespace,
    worker_id: str,
    model: Path,
    parent: int,
    sock: socket.socket,
    state_dir: Path,
    credential: str,
) -> None:
    from worker.engine import Engine
    from worker.errors import ParentGone, WorkerError

    engine = Engine(
        model,
        args.device,
        parallel=args.parallel,
        threads=args.threads,
        ctx_size=args.ctx_size,
        rpc_servers=args.rpc,
        tensor_split=args.tensor_split,
    )
    size = model.stat().st_size if model.is_file() else 0  # noqa: ASYNC240 - one stat, at start
    split = ""
    if args.rpc:
        from worker._rpc import name_peers, peer_label

        name_peers(args.rpc, args.rpc_names or [])
        split = f", split across {', '.join(map(peer_label, args.rpc))}"
    NARRATE.action("model_load").target(model.name).human(
        f"Loading {model.name} ({size / 1e6:.1f} MB) on {args.device}{split}"
    ).field("bytes", size).emit()
    started = time.perf_counter()
    engine.on_progress = _narrate_progress(model.name, split=bool(args.rpc))
    loaded = _load_in_background(engine)  # its C part overlaps the imports below
    from jobs.server import serve, socket_url
    from worker.app import WorkerState, create_app

    state = WorkerState(worker_id, model, args.device)
    job_app = create_app(state, engine, state_dir=state_dir, token=credential, bind=args.bind)
    url = socket_url(sock)

    async def load() -> None:
        from worker.chat import import_early, prepare

        import_early()
        try:
            await anyio.to_thread.run_sync(loaded.result, abandon_on_cancel=True)
        except WorkerError as exc:
            state.status = "failed"
            failures.append(exc)
            stop.set()
            return
        took = time.perf_counter() - started
        # The template compiled before `ready`: a cold start's first prompt is a chat.
        await anyio.to_thread.run_sync(prepare, engine.chat_template)
        state.status = "ready"
        NARRATE.action("model_load").target(model.name).human(
            f"Loaded {model.name} ({size / 1e6:.1f} MB) in {took:.2f} s"
        ).field("bytes", size).field("load_s", round(took, 3)).emit()
        await listening.wait()
        NARRATE.action("ready").target(url).human(f"Worker {worker_id} ready on {url}").emit()

    async def announce_listen(_: str) -> None:
        NARRATE.action("listen").target(url).human(f"Listening on {url}").emit()
        listening.set()

    # The model loads while the server starts: /health answers `loading` until it is in.
    async def watch_parent() -> None:
        """Stop once the process that started us has exited (we were re-parented).

        Polled: Linux can signal a child when its parent dies (PR_SET_PDEATHSIG), but only
        the spawner can ask for it; polling also covers a worker started by hand.
        """
        while os.getppid() == parent:  # noqa: ASYNC110 - no event exists for a parent's death
            await anyio.sleep(PARENT_POLL_S)
        failures.append(ParentGone(parent))
        stop.set()

    listening = anyio.Event()
    stop = anyio.Event()
    failures: list[WorkerError] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_parent)
        tg.start_soon(load)
        await serve(job_app, sock, on_ready=announce_listen, stop_when=stop)
        tg.cancel_scope.cancel()
    if failures:
        raise failures[0]
    NARRATE.action("stopped").human(f"Worker {worker_id} stopped").emit()


def _narrate_progress(name: str, *, split: bool) -> Callable[[float, str], None]:
    """The engine's load progress hook: a `model_load` line once a second of a long load,
    and for a split each time the weights start going to another place (this CPU, then
    each RPC peer in turn: "… 40%: layers for 127.0.0.1:41235 (hive gpu2)")."""
    said_at = [time.monotonic()]
    said_where = [""]

    def told(progress: float, where: str) -> None:
        now = time.monotonic()
        moved = split and where != said_where[0]
        if not moved and now - said_at[0] < PROGRESS_EVERY_S:
            return
        said_at[0], said_where[0] = now, where
        if split:
            from worker._rpc import peer_label
            from worker.engine import HERE

            where = where if where == HERE else peer_label(where)
        whose = f": layers for {where}" if split else ""
        NARRATE.action("model_load").target(name).human(
            f"Loading {name}: {progress:.0%}{whose}"
        ).field("progress", round(progress, 3)).emit()

    return told


def _load_in_background(engine: Engine) -> concurrent.futures.Future[None]:
    """Start loading the model on a thread of its own: `engine.load`'s outcome.

    The load is mostly C (the file read, the weights laid out) and releases the GIL, so
    a worker started cold has it run beside the import of its server stack (Starlette,
    uvicorn, the job server: ~0.2 s) instead of after it."""
    loaded: concurrent.futures.Future[None] = concurrent.futures.Future()

    def run() -> None:
        try:
            engine.load()
        except BaseException as exc:  # handed to whoever waits on the outcome
            loaded.set_exception(exc)
        else:
            loaded.set_result(None)

    threading.Thread(target=run, name="model load", daemon=True).start()
    return loaded


if __name__ == "__main__":
    main()
