"""One model split by layers across two RPC servers and this CPU, against llama.cpp's own.

    .venv/bin/python bench/bench_split.py [--quick]

rbee's split (issue 27): SmolLM2-135M-Instruct (builtin:smollm2) loaded by the worker's
Engine in a child process with `rpc_servers` = two RPC servers started as a hive starts
them (hive/_rpc_server.py RpcServers: `python -m hive._rpc_host`, a tensor cache each)
and `tensor_split` 1,1,1 (each server a third of the layers, this CPU the first third).

The peer: llama.cpp's own `rpc-server -c` (twice) and `llama-bench --rpc` with the same
split (`-ngl` and `-ts` leave this CPU the same first layers, `-ot` the output), built once from
the sources vendored in the installed llama-cpp-python's sdist (bench/_llama_server.py,
`rpc_binaries`). Both sides: the same threads, flash attention off, one token per decode.
Where the peer cannot be built, the bench prints why and measures rbee's side alone.

Figures, medians of interleaved rounds (the order alternating, fresh servers and empty
tensor caches every round):
- decode tok/s of one stream, the split vs the peer's (llama-bench tg). Goal >= 0.85x.
- first load, the Engine's load (RPC registration, weights sent, context) vs the wall time
  of the peer's `llama-bench -n 1 --no-warmup` (its load plus a token). Goal <= 1.25x.
  Also printed: wall vs wall, rbee's child from spawn (python and llama_cpp's import too).
- second load, from the RPC servers' tensor cache (tensors over 10 MiB go by hash), vs
  the first. Goal <= 0.3x. On loopback the bytes cost next to nothing and only SmolLM2's
  embedding is over 10 MiB, so this is also measured where the cache matters: a wide
  generated model (WIDE: every layer tensor over 10 MiB) loaded twice with both links
  paced to LINK_BYTES_S (1 Gbit/s, the LAN a user's machines share).
- loaded link: decode tok/s with a proxy in front of one RPC server that delays every
  chunk DELAY_MS each way (the kernel here has no netem), both sides, and vs direct.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))
import _llama_server as llama_server
from _common import conditions, quick_flag
from _daemons import owned_home
from bench_slots import load, model_path

from hive._rpc_host import rpc_unsupported_reason
from hive._rpc_server import RpcServers, free_loopback_port
from hive.tiny_model import TinyShape, write_tiny_model
from worker._rpc import OUTPUT_TENSORS, RpcUnavailable, probe

THREADS = 2  # the worker's and every RPC server's: the machine has 2 shared cores
SPLIT = (1.0, 1.0, 1.0)  # server 1, server 2, this CPU
CTX = 512  # tokens of context: the decode runs stay well inside it
DELAY_MS = 1.0  # the loaded link's delay, each way
LINK_BYTES_S = 125e6  # the paced link of the tensor-cache figure: 1 Gbit/s
# The cache figure's model: f32, q/k/v/o 1792x1792 (12.8 MB) and ffn 1792x4096 (29 MB),
# all over ggml's 10 MiB hashing threshold; 5 layers, ~0.7 GB.
WIDE = {"n_embd": 1792, "n_head": 14, "n_head_kv": 14, "n_ff": 4096, "n_layer": 5}
READY_S = 30.0  # an rpc-server's start
RUN_S = 600.0  # one child or llama-bench run on a busy machine
CHILD = "--split-child"  # argv[1] of the Engine child this script runs as


def child(spec: dict[str, Any]) -> None:
    """In a child process: load the split with the worker's Engine, decode `tokens` one at
    a time `reps` times, print {"load_s", "tok_s", "n_layer"} as one JSON line."""
    import ctypes

    import llama_cpp

    from worker.engine import Engine

    engine = Engine(
        Path(spec["model"]), "cpu", parallel=1, threads=THREADS, ctx_size=CTX,
        rpc_servers=spec["endpoints"], tensor_split=SPLIT,
    )  # fmt: skip
    engine.load()
    token = (ctypes.c_int32 * 1)()

    def decode(n: int) -> float:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(engine.ctx), True)
        started = time.perf_counter()
        for i in range(n):
            token[0] = (i * 7919 + 1) % engine.n_vocab  # as llama-bench: any tokens
            if llama_cpp.llama_decode(engine.ctx, llama_cpp.llama_batch_get_one(token, 1)):
                raise SystemExit("llama_decode failed")
            # Each token waited for, as llama-bench's tg does and as the worker's sampler
            # does when it reads the logits. Decodes queued without it stall for up to a
            # second now and then on an RPC split (a loop like that ran at 0.3-0.5x).
            llama_cpp.llama_synchronize(engine.ctx)
        return n / (time.perf_counter() - started)

    rates = []
    if spec["reps"] > 1:
        decode(4)  # warm-up, as llama-bench's (not for a load's single token)
    if spec["tokens"]:
        rates = [decode(spec["tokens"]) for _ in range(spec["reps"])]
    out = {"load_s": engine.load_time_s, "n_layer": llama_cpp.llama_model_n_layer(engine.model)}
    print(json.dumps({**out, "tok_s": statistics.mean(rates) if rates else None}), flush=True)
    os._exit(0)  # ggml's RPC and watch threads need no orderly teardown


async def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[str, float]:
    """stdout of `argv` and its wall time; raises RuntimeError with its stderr's tail."""
    started = time.perf_counter()
    with anyio.fail_after(RUN_S):
        done = await anyio.run_process(argv, check=False, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{Path(argv[0]).name} exited {done.returncode}: {' / '.join(tail)}")
    return done.stdout.decode(), wall


async def ours(model: Path, endpoints: list[str], tokens: int, reps: int) -> dict[str, Any]:
    spec = {"model": str(model), "endpoints": endpoints, "tokens": tokens, "reps": reps}
    out, wall = await run([sys.executable, __file__, CHILD, json.dumps(spec)])
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {**result, "wall_s": wall}


@contextlib.asynccontextmanager
async def delay_proxy(
    target: int, delay_s: float, bytes_s: float | None = None
) -> AsyncIterator[str]:
    """A TCP proxy on 127.0.0.1 to `target` that delivers every chunk `delay_s` after it
    arrived, each way, in order, and no faster than `bytes_s` when given; yields its
    endpoint."""
    loop = asyncio.get_running_loop()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        free_at = 0.0  # when the paced link has sent what it was given

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                await asyncio.sleep(max(0.0, item[0] - loop.time()))
                writer.write(item[1])
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        with contextlib.suppress(OSError):
            while data := await reader.read(1 << 16):
                due = loop.time() + delay_s
                if bytes_s is not None:
                    free_at = max(due, free_at) + len(data) / bytes_s
                    due = free_at
                queue.put_nowait((due, data))
        queue.put_nowait(None)
        with contextlib.suppress(OSError):
            await delivering
        writer.close()

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    server = await asyncio.start_server(connect, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def ours_round(
    model: Path, home: Path, name: str, tokens: int, reps: int
) -> dict[str, float]:
    """Fresh hive RPC servers (an empty tensor cache): first load with the decode runs, a
    second load from the cache, then the decode runs with one link delayed."""
    log = (home / f"{name}.log").open("a")  # the hive's narration and ggml's lines
    with log, contextlib.redirect_stdout(log):
        return await _serve_ours(model, home, name, tokens, reps)


async def _serve_ours(
    model: Path, home: Path, name: str, tokens: int, reps: int
) -> dict[str, float]:
    async with RpcServers(home / name, threads=THREADS).running() as servers:
        lent = [await servers.start(), await servers.start()]
        endpoints = [server.endpoint for server in lent]
        first = await ours(model, endpoints, 1, 1)  # a load and a token, as the peer's
        second = await ours(model, endpoints, 1, 1)
        direct = await ours(model, endpoints, tokens, reps)
        async with delay_proxy(lent[0].port, DELAY_MS / 1000) as slow:
            linked = await ours(model, [slow, endpoints[1]], tokens, reps)
    async with (
        RpcServers(home / f"{name}-lan", threads=THREADS).running() as servers,
        contextlib.AsyncExitStack() as links,
    ):
        paced = [
            await links.enter_async_context(delay_proxy(s.port, 0.0, LINK_BYTES_S))
            for s in [await servers.start(), await servers.start()]
        ]
        wide = home / "wide.gguf"
        wide_first = await ours(wide, paced, 1, 1)
        wide_second = await ours(wide, paced, 1, 1)
    return {
        "tok_s": direct["tok_s"], "load_s": first["load_s"], "reload_s": second["load_s"],
        "load_wall_s": first["wall_s"], "reload_wall_s": second["wall_s"],
        "linked_tok_s": linked["tok_s"], "n_layer": first["n_layer"],
        "lan_load_s": wide_first["load_s"], "lan_reload_s": wide_second["load_s"],
    }  # fmt: skip


@contextlib.asynccontextmanager
async def rpc_servers(exe: Path, cache: Path) -> AsyncIterator[list[int]]:
    """Two llama.cpp rpc-servers with their tensor cache (-c) in `cache`; their ports."""
    env = {**os.environ, "LLAMA_CACHE": str(cache)}
    procs: list[anyio.abc.Process] = []
    ports = [free_loopback_port(), free_loopback_port()]
    try:
        with (cache.parent / f"{cache.name}.log").open("ab") as log:
            for port in ports:
                argv = [str(exe), "-H", "127.0.0.1", "-p", str(port), "-t", str(THREADS), "-c"]
                procs.append(await anyio.open_process(argv, env=env, stdout=log, stderr=log))
        for port in ports:
            with anyio.fail_after(READY_S):
                while True:
                    try:
                        probe(f"127.0.0.1:{port}", timeout=1.0)
                        break
                    except RpcUnavailable:
                        await anyio.sleep(0.05)
        yield ports
    finally:
        with anyio.CancelScope(shield=True):
            for proc in procs:
                proc.terminate()
                await proc.wait()


async def peer_round(
    bins: dict[str, Path], model: Path, home: Path, name: str, tokens: int, reps: int,
    n_layer: int,
) -> dict[str, float]:  # fmt: skip
    """The same shape with llama.cpp's rpc-server and llama-bench."""
    # As worker/engine.py splits: this CPU keeps the output and the first kept-1 layers
    # (the output is offloaded last, to the last device, and overridden back to the CPU).
    kept = round((n_layer + 1) * SPLIT[-1] / sum(SPLIT))
    offloaded = n_layer - (kept - 1)
    shares = [offloaded * s / sum(SPLIT[:-1]) for s in SPLIT[:-1]]
    shares[-1] += 1
    base = [str(bins["llama-bench"]), "-m", str(model), "-t", str(THREADS), "-fa", "0"]
    base += ["-ngl", str(offloaded + 1), "-ts", "/".join(f"{s:g}" for s in shares)]
    base += ["-ot", f"{OUTPUT_TENSORS.decode()}=CPU", "-p", "0", "-o", "json"]

    def tg(report: str) -> float:
        return float(json.loads(report)[0]["avg_ts"])

    async with rpc_servers(bins["rpc-server"], home / name) as ports:
        link = ["-rpc", ",".join(f"127.0.0.1:{p}" for p in ports)]
        _, first = await run([*base, *link, "-n", "1", "-r", "1", "--no-warmup"])
        _, second = await run([*base, *link, "-n", "1", "-r", "1", "--no-warmup"])
        direct, _ = await run([*base, *link, "-n", str(tokens), "-r", str(reps)])
        async with delay_proxy(ports[0], DELAY_MS / 1000) as slow:
            link = ["-rpc", f"{slow},127.0.0.1:{ports[1]}"]
            linked, _ = await run([*base, *link, "-n", str(tokens), "-r", str(reps)])
    return {"tok_s": tg(direct), "load_s": first, "reload_s": second, "linked_tok_s": tg(linked)}


def peer_bins() -> dict[str, Path] | None:
    """llama.cpp's rpc-server and llama-bench (built on first use), or None, said why."""
    try:
        return llama_server.rpc_binaries()
    except llama_server.Unavailable as exc:
        print(f"llama.cpp rpc-server peer: skipped ({exc})")
        return None


async def measure(
    model: Path, home: Path, bins: dict[str, Path] | None, rounds: int, tokens: int, reps: int
) -> dict[str, list[dict[str, float]]]:
    figures: dict[str, list[dict[str, float]]] = {"rbee": [], "llama.cpp": []}
    n_layer = 0  # known once rbee's side ran (it runs first in round 1): the peer's -ngl
    for r in range(rounds):
        sides = ["rbee", "llama.cpp"] if bins is not None else ["rbee"]
        for side in reversed(sides) if r % 2 else sides:
            if side == "rbee":
                got = await ours_round(model, home, f"rbee-{r}", tokens, reps)
                n_layer = int(got["n_layer"])
            else:
                assert bins is not None
                got = await peer_round(bins, model, home, f"peer-{r}", tokens, reps, n_layer)
            figures[side].append(got)
        line = "; ".join(f"{s} {f[-1]['tok_s']:.1f} tok/s" for s, f in figures.items() if f)
        print(f"round {r + 1}/{rounds} (load average {load()}): {line}", flush=True)
    return figures


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def report(figures: dict[str, list[dict[str, float]]]) -> None:
    """The medians, each side's, then rbee's against the peer's with the goals."""
    got = {
        side: {key: median(rows, key) for key in rows[0]} for side, rows in figures.items() if rows
    }
    for side, f in got.items():
        linked, tok, first, second = f["linked_tok_s"], f["tok_s"], f["load_s"], f["reload_s"]
        print(f"{side:9} decode {tok:6.1f} tok/s; loaded link {linked:6.1f} tok/s = "
              f"{linked / tok:.2f}x direct ({DELAY_MS:g} ms each way)")  # fmt: skip
        print(f"{side:9} first load {first:5.2f} s, second (tensor cache) {second:5.2f} s = "
              f"{second / first:.2f}x the first (goal <= 0.3x)")  # fmt: skip
    ours_ = got["rbee"]
    lan_first, lan_second = ours_["lan_load_s"], ours_["lan_reload_s"]
    print(f"rbee      over 1 Gbit/s links, a wide model: first load {lan_first:5.2f} s, "
          f"second {lan_second:5.2f} s = {lan_second / lan_first:.2f}x (goal <= 0.3x)")  # fmt: skip
    print(f"rbee      wall from spawn (python, imports, load, 1 token): first "
          f"{ours_['load_wall_s']:.2f} s, second {ours_['reload_wall_s']:.2f} s")  # fmt: skip
    if (peer := got.get("llama.cpp")) is None:
        return
    print(f"decode vs llama.cpp:           {ours_['tok_s'] / peer['tok_s']:.2f}x (goal >= 0.85x)")
    print(f"loaded link vs llama.cpp:      {ours_['linked_tok_s'] / peer['linked_tok_s']:.2f}x")
    print(f"first load vs llama.cpp:       {ours_['load_s'] / peer['load_s']:.2f}x (goal <= 1.25x; "
          "the Engine's load vs llama-bench's wall for a load and a token)")  # fmt: skip
    print(f"first load, wall vs wall:      {ours_['load_wall_s'] / peer['load_s']:.2f}x "
          "(rbee's adds starting python and importing llama_cpp)")  # fmt: skip


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == CHILD:
        child(json.loads(sys.argv[2]))
        return
    quick = quick_flag(__doc__, "2 rounds of 32 tokens x 2 instead of 5 of 64 x 3")
    rounds, tokens, reps = (2, 32, 2) if quick else (5, 64, 3)
    print(f"bench_split: {conditions()}, load average {load()} (other work skews every figure)")
    if (reason := rpc_unsupported_reason()) is not None:
        print(f"bench_split: skipped ({reason})")
        return
    bins = peer_bins()
    with owned_home("rbee-bench-split-") as home:
        os.environ["RBEE_HOME"] = str(home)  # every child carries it: owned_home stops them
        model, name = model_path(home)
        write_tiny_model(home / "wide.gguf", shape=TinyShape(**WIDE))
        print(f"model: {name}; split {SPLIT} over 2 RPC servers + this CPU, {THREADS} threads, "
              f"{tokens} tokens x {reps}, {rounds} rounds")  # fmt: skip
        figures = anyio.run(measure, model, home, bins, rounds, tokens, reps)
    report(figures)


if __name__ == "__main__":
    main()
