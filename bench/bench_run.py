"""`keeper run` end to end against bare relays of the same child, measured in one run.

    .venv/bin/python bench/bench_run.py [--quick] [--lines N] [--rounds R] [--honcho]
                                         [--against DIR]

The child prints N narration lines with `print()`. Each round runs every command once,
in turn (interleaved, so load from other processes hits them alike), all writing to
/dev/null; ratios are paired by round and their median is reported:

1. `python gen.py | cat`                        the pipe's floor (reference)
2. a minimal asyncio readline relay              read a line, write it (baseline)
3. `keeper run -- python gen.py` (plain)         goal (issue 24) >= 0.8 x the pipe's floor
4. `keeper --json run -- python gen.py`          goal (issue 24) >= 0.75 x the pipe's floor
5. honcho (with --honcho)                        reference
6. with --against DIR: plain and --json `keeper run` from the packages in DIR (a copy of
   the committed tree, say), in the same rounds: before against after, each row's ratios
   over the relay and the pipe's floor timed in its round.

Peak RSS is the largest resident set of the command's process tree (wait4's maxrss).
The same commands with 1k lines give each one's start-up (goal: plain `keeper run` at 1k
lines >= 0.9 x the relay); "lines alone" is the ratio with start-up taken off both
sides. Then `keeper run` peak RSS with N lines against 1k lines: goal flat, <= 1.2x.
Times are wall times of whole commands, start-up included. PYTHONUNBUFFERED and
PYTHONDONTWRITEBYTECODE are removed from every command's environment (DROPPED_ENV).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from _common import conditions

GEN = """
import sys
for i in range(int(sys.argv[1])):
    print(f"[queen-rbee] tick           : step {i} of the benchmark")
"""

RELAY = """
import asyncio, sys

async def main():
    proc = await asyncio.create_subprocess_exec(*sys.argv[1:], stdout=asyncio.subprocess.PIPE)
    readline, write = proc.stdout.readline, sys.stdout.buffer.write
    while line := await readline():
        write(line)
    sys.stdout.flush()
    await proc.wait()

asyncio.run(main())
"""


# PYTHONUNBUFFERED would make the relay write a syscall per line; PYTHONDONTWRITEBYTECODE
# would recompile every module not yet cached on every run, which an install never does.
DROPPED_ENV = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env["NO_COLOR"] = "1"
    return env


def run_once(argv: list[str], *, shell: bool = False) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one command, output to /dev/null."""
    with open(os.devnull, "wb") as devnull:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv[0] if shell else argv, shell=shell, stdout=devnull, stderr=devnull, env=_env()
        )
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv} exited with {proc.returncode}")
    return took, usage.ru_maxrss * 1024  # Linux reports KiB


def commands(
    folder: Path, lines: int, *, honcho: bool, against: Path | None = None
) -> dict[str, tuple[list[str], bool]]:
    py = sys.executable
    (folder / "gen.py").write_text(GEN)
    (folder / "relay.py").write_text(RELAY)
    gen = [py, str(folder / "gen.py"), str(lines)]
    found = {
        "python gen.py | cat": ([f"{' '.join(gen)} | cat"], True),
        "asyncio readline relay": ([py, str(folder / "relay.py"), *gen], False),
        "keeper run (plain)": ([py, "-m", "keeper", "run", "--", *gen], False),
        "keeper --json run": ([py, "-m", "keeper", "--json", "run", "--", *gen], False),
    }
    if against is not None:  # `-m keeper` finds the keeper of the folder it starts in
        keeper = f"cd {shlex.quote(str(against))} && exec {shlex.quote(py)} -m keeper"
        child = shlex.join(gen)
        found["keeper run (against)"] = ([f"{keeper} run -- {child}"], True)
        found["keeper --json run (against)"] = ([f"{keeper} --json run -- {child}"], True)
    if honcho:
        (folder / "Procfile").write_text("gen: " + " ".join(gen) + "\n")
        honcho_bin = str(Path(py).with_name("honcho"))
        found["honcho start"] = ([f"cd {folder} && {honcho_bin} start"], True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k lines, 3 rounds (not 300k, 7)")
    parser.add_argument("--lines", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--honcho", action="store_true", help="also time honcho")
    parser.add_argument(
        "--against", type=Path, help="also time the keeper in this folder (before/after)"
    )
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    n = args.lines or (100_000 if args.quick else 300_000)
    print(f"bench_run: {n:,} lines, {rounds} interleaved rounds; {conditions()} (removed)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Warm the page cache (interpreter, modules) with a short run of each command.
        for argv, shell in commands(
            folder, 1_000, honcho=args.honcho, against=args.against
        ).values():
            run_once(argv, shell=shell)
        cmds = commands(folder, n, honcho=args.honcho, against=args.against)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        rss: dict[str, list[int]] = {name: [] for name in cmds}
        for _ in range(rounds):
            for name, (argv, shell) in cmds.items():
                took, peak = run_once(argv, shell=shell)
                times[name].append(took)
                rss[name].append(peak)
        relay = times["asyncio readline relay"]
        goals = {"keeper run (plain)": 0.8, "keeper --json run": 0.75}  # x cat
        floor = times["python gen.py | cat"]
        for name, walls in times.items():
            rate = n / statistics.median(walls)
            line = (
                f"  {name:<27} {rate:>11,.0f} lines/s  peak RSS {max(rss[name]) / 2**20:5.1f} MiB"
            )
            if name.startswith("keeper"):
                ratio = statistics.median(r / t for r, t in zip(relay, walls, strict=True))
                to_cat = statistics.median(c / t for c, t in zip(floor, walls, strict=True))
                goal = f" (goal >= {goals[name]})" if name in goals else ""
                line += f"  {ratio:.2f}x relay, {to_cat:.2f}x cat{goal}"
            print(line)

        # Start-up apart: the cost of the other lines, from the same commands at 1k lines.
        small_cmds = commands(folder, 1_000, honcho=False, against=args.against)
        small: dict[str, list[float]] = {name: [] for name in small_cmds}
        small_rss: list[int] = []
        for _ in range(rounds):
            for name, (argv, shell) in small_cmds.items():
                took, peak = run_once(argv, shell=shell)
                small[name].append(took)
                if name == "keeper run (plain)":
                    small_rss.append(peak)
        relay_lines = statistics.median(relay) - statistics.median(small["asyncio readline relay"])
        small_relay = small["asyncio readline relay"]
        for name in small:
            if not name.startswith("keeper"):
                continue
            start = statistics.median(small[name])
            per_line = statistics.median(times[name]) - start
            at_1k = statistics.median(r / t for r, t in zip(small_relay, small[name], strict=True))
            print(
                f"  {name:<27} start-up {start * 1e3:5.0f} ms; 1k lines {at_1k:.2f}x the relay"
                f"{' (goal >= 0.9)' if name == 'keeper run (plain)' else ''}; "
                f"lines alone {relay_lines / per_line:.2f}x the relay's"
            )
        big_rss = statistics.median(rss["keeper run (plain)"])
        low_rss = statistics.median(small_rss)
        print(
            f"  keeper run peak RSS: {n:,} lines {big_rss / 2**20:.1f} MiB vs 1,000 lines "
            f"{low_rss / 2**20:.1f} MiB = {big_rss / low_rss:.2f}x (goal <= 1.2)"
        )


if __name__ == "__main__":
    main()
