"""Keeper start-up costs, measured in the same run.

1. `keeper --help` wall time   vs `python -c "import typer"`    goal ratio <= 1.5
2. `keeper queen start` until the queen is healthy: median seconds (start and stop
   repeated in a throw-away RBEE_HOME on a free port).
3. `keeper status` against that queen, and `keeper queen stop`, each vs an
   `import typer` timed in the same round                      goal ratio <= 2
4. the floor under `keeper status`: importing what any command that asks the queen
   and prints a table must load (Typer, httpx with httpcore, Rich's console and
   table), vs `import typer` in the same round                 (no goal: a reference)
5. `keeper status` and `keeper queen stop` as the command tree reads them (spelt
   `--queen-url=URL`, which keeper.run_argv leaves to Typer): the same commands before
   the quick reader, each vs the quick one in the same round   (no goal: the gain)

Each round runs every command once, in turn, so load from other processes hits them
alike; ratios are paired by round (each figure over the `import typer` timed just before
it), and their median printed. Bytecode is written and used as an installed keeper's would
be, whatever PYTHONDONTWRITEBYTECODE says: a module recompiled on every run is not start-up
cost. The queens started are stopped when the bench ends, however it ends (`_daemons`).

Run: python bench/bench_keeper.py [--quick]
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from _common import conditions, quick_flag
from _daemons import owned_home

RUNS = 3 if "--quick" in sys.argv else 15
# What `python -m keeper` does before importing anything (keeper.__main__), then the
# libraries a queen query with a table cannot do without.
FLOOR = (
    "import sys; sys.modules['trio'] = None; sys.modules['httpx._main'] = None; "
    "import typer, httpx, httpcore, rich.console, rich.table"
)


def _wall(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    print(f"bench_keeper: median of {RUNS} interleaved rounds; {conditions()}")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled once, then cached
    py = sys.executable
    typer = [py, "-c", "import typer"]
    helps, starts, statuses, stops, floors, typers = [], [], [], [], [], []
    tree_statuses: list[float] = []
    tree_stops: list[float] = []
    with owned_home("rbee-bench-keeper-") as home:
        env = {**os.environ, "RBEE_HOME": str(home), "NO_COLOR": "1"}
        _wall(typer)  # warm the page cache
        _wall([py, "-m", "keeper", "--help"])
        for _ in range(RUNS):
            port = str(_free_port())
            keeper = [py, "-m", "keeper", "--queen-url", f"http://127.0.0.1:{port}"]
            tree = [py, "-m", "keeper", f"--queen-url=http://127.0.0.1:{port}"]
            # Paired by round: each figure next to a typer import timed just before it.
            typers.append(_wall(typer))
            helps.append(_wall([py, "-m", "keeper", "--help"]))
            starts.append(_wall([*keeper, "queen", "start", "--port", port], env))
            statuses.append(_wall([*keeper, "status"], env))
            tree_statuses.append(_wall([*tree, "status"], env))
            floors.append(_wall([py, "-c", FLOOR]))
            stops.append(_wall([*keeper, "queen", "stop"], env))
            _wall([*keeper, "queen", "start", "--port", port], env)
            tree_stops.append(_wall([*tree, "queen", "stop"], env))
    typer_s = statistics.median(typers)
    print(f"  python -c 'import typer'     {typer_s * 1e3:7.1f} ms  baseline")
    help_s = statistics.median(helps)
    ratio = statistics.median(h / t for h, t in zip(helps, typers, strict=True))
    print(f"  keeper --help                {help_s * 1e3:7.1f} ms  ratio {ratio:.2f} (goal <= 1.5)")
    median = statistics.median(starts)
    spread = f"min {min(starts):.2f}, max {max(starts):.2f}"
    print(f"  keeper queen start → healthy {median:7.2f} s   median ({spread})")
    for label, walls, goal in (
        ("keeper status (running queen)", statuses, "(goal <= 1.5)"),
        ("keeper queen stop", stops, "(goal <= 1.2)"),
        ("floor: typer+httpx+rich import", floors, "(reference)"),
        ("status, command tree", tree_statuses, "(before the quick reader)"),
        ("queen stop, command tree", tree_stops, "(before the quick reader)"),
    ):
        ratio = statistics.median(w / t for w, t in zip(walls, typers, strict=True))
        print(
            f"  {label:<29}{statistics.median(walls) * 1e3:7.1f} ms  "
            f"{ratio:.2f}x import typer {goal}"
        )
    for label, quick, slow in (
        ("status", statuses, tree_statuses),
        ("queen stop", stops, tree_stops),
    ):
        gain = statistics.median(s / q for q, s in zip(quick, slow, strict=True))
        print(f"  {label}: the command tree takes {gain:.2f}x the quick reader's time")


if __name__ == "__main__":
    quick_flag(__doc__, "3 rounds instead of 15")  # module constants above already read it
    main()
