"""Cold start to the first token: `keeper infer` with nothing running, against llama.cpp's
own `llama-server` started and asked the same, in interleaved rounds.

    .venv/bin/python bench/bench_cold.py [--quick]

Each round, from nothing running to the first piece of the answer:
- rbee: `keeper infer --model builtin:smollm2 PROMPT` in an RBEE_HOME whose catalog
  already holds the model (a first, untimed run fetched it): the keeper starts the
  queen and the local hive, the hive a worker, which loads the model and answers. Timed
  from the keeper's start to its first byte on stdout (the answer's first piece); then
  the hive and the queen are stopped (not timed).
- llama-server: built from the vendored sources of the installed llama-cpp-python
  (bench/_llama_server.py; skipped with the reason where it cannot be built), started
  on the same GGUF with the worker's threads, slots and context, asked the same prompt
  (streamed chat completion) as soon as /health answers. Timed from its start to the
  first content delta.

Medians and their ratio (issue 24's goal: rbee <= 2x llama-server). ggml's threads spin:
the figures need a quiet machine. Everything started is stopped when the bench ends,
however it ends (`_daemons`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import _llama_server as llama_server
from _common import conditions, quick_flag
from _daemons import owned_home
from _llama_server import LlamaServer

MODEL = "builtin:smollm2"
PROMPT = "What is the capital of France?"
THREADS, PARALLEL, CTX_PER_SLOT = 2, 2, 4096  # a CPU worker's defaults (worker/engine.py)
DEADLINE_S = 300.0  # one cold start on a busy machine, download excluded


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keeper(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def rbee_cold(env: dict[str, str]) -> float:
    """Seconds from `keeper infer`'s start to its first answer byte; then stop it all."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keeper", "infer", "--model", MODEL, "--temperature", "0",
         "--max-tokens", "8", PROMPT],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    took = time.perf_counter() - start
    proc.stdout.read()
    if proc.wait(DEADLINE_S) != 0 or not first:
        raise SystemExit(f"keeper infer failed (exit {proc.returncode}); see {env['RBEE_HOME']}")
    keeper(env, "hive", "stop")
    keeper(env, "queen", "stop")
    return took


def peer_cold(exe: Path, model: Path, log: Path) -> float:
    """Seconds from llama-server's start to the first content delta of the same prompt."""
    port = free_port()
    start = time.perf_counter()
    server = LlamaServer.start(
        exe, model, port=port, threads=THREADS, parallel=PARALLEL, ctx_per_slot=CTX_PER_SLOT,
        log=log,
    )  # fmt: skip
    try:
        with httpx.Client(trust_env=False, timeout=DEADLINE_S) as http:
            while True:
                try:
                    if http.get(f"{server.url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.process.poll() is not None:
                    raise SystemExit(f"llama-server exited; see {log}")
                time.sleep(0.005)
            body = {
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": 8, "temperature": 0, "stream": True,
            }  # fmt: skip
            with http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as reply:
                for line in reply.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    delta = json.loads(line[6:])["choices"][0].get("delta", {})
                    if delta.get("content"):
                        return time.perf_counter() - start
        raise SystemExit("llama-server answered no content")
    finally:
        server.close()


def main() -> None:
    quick = quick_flag(__doc__, "3 rounds instead of 7")
    rounds = 3 if quick else 7
    print(f"bench_cold: {rounds} interleaved rounds; {conditions()}")
    try:
        exe: Path | None = llama_server.binary()
    except llama_server.Unavailable as exc:
        print(f"llama-server peer: skipped ({exc})")
        exe = None
    with owned_home("rbee-bench-cold-") as home:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE",)}
        env.update(RBEE_HOME=str(home), RBEE_QUEEN_URL=f"http://127.0.0.1:{free_port()}")
        rbee_cold(env)  # not timed: fetches the model into the catalog (and warms the disk)
        model = next(p for p in (home / "models").rglob("*.gguf") if "smollm2" in p.name.lower())
        peer_model = home / "peer.gguf"  # its own copy: both read the file cold alike
        shutil.copyfile(model, peer_model)
        rbee: list[float] = []
        peer: list[float] = []
        for _ in range(rounds):
            rbee.append(rbee_cold(env))
            if exe is not None:
                peer.append(peer_cold(exe, peer_model, home / "llama-server.log"))
    median = statistics.median(rbee)
    print(f"  rbee: keeper infer, nothing running  {median:6.2f} s to the first token "
          f"(min {min(rbee):.2f}, max {max(rbee):.2f})")  # fmt: skip
    if peer:
        base = statistics.median(peer)
        ratios = [r / p for r, p in zip(rbee, peer, strict=True)]
        print(f"  llama-server started and asked   {base:6.2f} s (min {min(peer):.2f})")
        print(f"  ratio {statistics.median(ratios):.2f}x llama-server (goal <= 2)")


if __name__ == "__main__":
    main()
