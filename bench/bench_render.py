"""Live view cost: the bench_capture child rendered on a pseudo-terminal, live vs plain.

    .venv/bin/python bench/bench_render.py [--lines N] [--quick]

Both runs capture the same child and write to the slave end of a pty whose master is
drained by another process, as a terminal emulator would. Goal (issue 12): live >= 0.8 x plain.
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

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import conditions
from bench_capture import child_argv, child_env
from rich.console import Console

from keeper.output import Renderer
from keeper.settings import KeeperSettings
from narration_core.capture import ProcessNarrationCapture

# The terminal: another process reading the pty's master end, as an emulator does (a
# drain thread in this process would compete with the renderer for the GIL, by bytes).
TERMINAL = """
import os, sys
received = 0
while True:
    try:
        chunk = os.read(0, 1 << 16)
    except OSError:  # the slave end closed: EIO on Linux
        break
    if not chunk:
        break
    received += len(chunk)
print(received)
"""


def render_on_pty(argv: list[str], *, live: bool) -> tuple[float, int]:
    """Seconds to capture and render the child's output; and bytes the terminal got."""
    master, slave = os.openpty()
    reader = subprocess.Popen(
        [sys.executable, "-c", TERMINAL], stdin=master, stdout=subprocess.PIPE
    )
    os.close(master)

    async def main() -> None:
        proc = await ProcessNarrationCapture().spawn(argv, env=child_env())
        async with proc:
            await proc.wait()

    terminal = open(slave, "w", encoding="utf-8", closefd=True)  # noqa: SIM115
    console = Console(file=terminal, force_terminal=True, width=120, color_system="truecolor")
    start = time.perf_counter()
    with Renderer(
        KeeperSettings(), console=console, file=terminal, mode="live" if live else "plain"
    ) as renderer:
        renderer.status("Running the benchmark child")
        anyio.run(main)
    took = time.perf_counter() - start
    terminal.close()
    out, _ = reader.communicate()
    return took, int(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--quick", action="store_true", help="100k lines")
    args = parser.parse_args()
    lines = 100_000 if args.quick else args.lines
    print(f"bench_render: {lines:,} lines on a pty; {conditions()}")
    with tempfile.TemporaryDirectory() as tmp:
        argv = child_argv(Path(tmp), narrate=False, lines=lines)
        # Interleaved rounds, ratio paired by round: load from other processes hits both.
        rounds = [
            (render_on_pty(argv, live=False), render_on_pty(argv, live=True)) for _ in range(3)
        ]
        plain_s = statistics.median(plain[0] for plain, _ in rounds)
        live_s = statistics.median(live[0] for _, live in rounds)
        plain_bytes, live_bytes = rounds[0][0][1], rounds[0][1][1]
        print(f"  plain: {lines / plain_s:>10,.0f} lines/s ({plain_s:.2f} s, {plain_bytes:,} B)")
        print(f"  live : {lines / live_s:>10,.0f} lines/s ({live_s:.2f} s, {live_bytes:,} B)")
        ratio = statistics.median(plain[0] / live[0] for plain, live in rounds)
        print(f"  live / plain: {ratio:.2f} (goal >= 0.8), median of 3 interleaved rounds")


if __name__ == "__main__":
    main()
