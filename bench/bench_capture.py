"""Capture throughput: a child printing narration lines, read four ways.

    .venv/bin/python bench/bench_capture.py [--lines N] [--rounds R] [--quick] [--narrate-child]

1. baseline: a bare asyncio `readline` loop that only counts lines;
2. ProcessNarrationCapture (split, parse, re-emit) into the keeper's JSON renderer;
3. the same into the plain renderer; both write to /dev/null;
4. honcho relaying the same child (`honcho start`, output to /dev/null).

Goals: capture >= 0.8 x baseline, >= 3 x honcho. By default the child
writes pre-formatted lines in blocks (as fast as a child can print); --narrate-child
makes it call `narrate()` per event with the capture marker set, i.e. flush per event,
which is what real rbee children do. Each round runs the four once, in turn, so load from
other processes hits them alike; ratios are paired by round, and their median printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import conditions

from keeper.output import Renderer
from keeper.settings import KeeperSettings
from narration_core.capture import ProcessNarrationCapture

FAST_CHILD = """
import sys
n = int(sys.argv[1])
write = sys.stdout.write
for start in range(0, n, 1000):
    write("".join(f"[queen-rbee] tick           : step {i} of the benchmark\\n"
                  for i in range(start, min(n, start + 1000))))
sys.stdout.flush()
"""

NARRATE_CHILD = """
import sys
from narration_core import Narrator
n = int(sys.argv[1])
narrate = Narrator("queen-rbee")
for i in range(n):
    narrate.action("tick").human(f"step {i} of the benchmark").emit()
"""


def child_argv(folder: Path, *, narrate: bool, lines: int) -> list[str]:
    path = folder / "child.py"
    path.write_text(textwrap.dedent(NARRATE_CHILD if narrate else FAST_CHILD))
    return [sys.executable, str(path), str(lines)]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["RBEE_NARRATION_CAPTURED"] = "1"  # the capture sets it too; the baseline must match
    return env


async def _baseline(argv: list[str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, env=child_env()
    )
    assert proc.stdout is not None
    count = 0
    while await proc.stdout.readline():
        count += 1
    await proc.wait()
    return count


def baseline(argv: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    count = asyncio.run(_baseline(argv))
    return time.perf_counter() - start, count


def capture(argv: list[str], *, json: bool) -> tuple[float, int]:
    counted = 0

    async def main() -> None:
        proc = await ProcessNarrationCapture().spawn(argv, env=child_env())
        async with proc:
            await proc.wait()

    with open(os.devnull, "w") as devnull:
        start = time.perf_counter()
        with Renderer(KeeperSettings(json=json), file=devnull) as renderer:
            original = renderer.event

            def counting(event: object) -> None:
                nonlocal counted
                counted += 1
                original(event)  # type: ignore[arg-type]

            from narration_core import set_stdout_sink

            set_stdout_sink(counting)
            anyio.run(main)
        return time.perf_counter() - start, counted


def honcho(argv: list[str], folder: Path) -> float:
    (folder / "Procfile").write_text("bench: " + " ".join(argv) + "\n")
    honcho_bin = Path(sys.executable).with_name("honcho")
    start = time.perf_counter()
    subprocess.run(
        [str(honcho_bin), "start"],
        cwd=folder,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=None, help="default 1M (--quick: 30k)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (--quick: 3)")
    parser.add_argument("--quick", action="store_true", help="30k lines, 3 rounds")
    parser.add_argument("--narrate-child", action="store_true", help="child narrates per event")
    args = parser.parse_args()
    lines = args.lines or (30_000 if args.quick else 1_000_000)
    rounds = args.rounds or (3 if args.quick else 5)
    print(f"bench_capture: {lines:,} lines, {rounds} interleaved rounds; {conditions()}")
    child = "narrate() per event (flush per event)" if args.narrate_child else "block writes"
    print(f"child: {child}")
    times: dict[str, list[float]] = {"baseline": [], "json": [], "plain": [], "honcho": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        argv = child_argv(folder, narrate=args.narrate_child, lines=lines)
        for _ in range(rounds):
            base_s, base_n = baseline(argv)
            assert base_n == lines, base_n
            times["baseline"].append(base_s)
            for mode, json in (("json", True), ("plain", False)):
                took, seen = capture(argv, json=json)
                assert seen == lines, (mode, seen)
                times[mode].append(took)
            times["honcho"].append(honcho(argv, folder))

    def rate(name: str) -> str:
        took = statistics.median(times[name])
        return f"{lines / took:>12,.0f} lines/s ({took:.2f} s)"

    def ratio(over: str, under: str) -> float:
        return statistics.median(o / u for o, u in zip(times[over], times[under], strict=True))

    print(f"  asyncio readline baseline : {rate('baseline')}")
    for mode in ("json", "plain"):
        print(
            f"  capture -> {mode:<5} renderer: {rate(mode)}"
            f"  ratio vs baseline {ratio('baseline', mode):.2f}"
        )
    print(f"  honcho start relay        : {rate('honcho')}")
    for mode in ("json", "plain"):
        print(f"  capture ({mode}) vs honcho: {ratio('honcho', mode):.2f}x (goal >= 3)")


if __name__ == "__main__":
    main()
