"""Keeper start-up costs, measured in the same run.

1. `keeper --help` wall time   vs `python -c "import typer"`    goal ratio <= 1.5
2. `keeper queen start` until the queen is healthy: median seconds (start and stop
   repeated in a throw-away RBEE_HOME on a free port).
3. `keeper status` against that queen, and `keeper queen stop`, each vs an
   `import typer` timed in the same round                      goal ratio <= 2
4. the floor under `keeper status`: importing what any command that asks the queen
   and prints a table must load (Typer, httpx with httpcore, Rich's console and
   table), vs `import typer` in the same round                 (no goal: a reference)

Bytecode is written and used as an installed keeper's would be, whatever
PYTHONDONTWRITEBYTECODE says: a module recompiled on every run is not start-up cost.

Run: python bench/bench_keeper.py [--quick]
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from _common import conditions, quick_flag

RUNS = 5 if "--quick" in sys.argv else 15
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


def _median_wall(argv: list[str], env: dict[str, str] | None = None) -> float:
    _wall(argv, env)  # warm the page cache
    return statistics.median(_wall(argv, env) for _ in range(RUNS))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    print(f"bench_keeper: median of {RUNS} runs; {conditions()}")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled once, then cached
    py = sys.executable
    typer_s = _median_wall([py, "-c", "import typer"])
    help_s = _median_wall([py, "-m", "keeper", "--help"])
    print(f"  python -c 'import typer'     {typer_s * 1e3:7.1f} ms  baseline")
    ratio = help_s / typer_s
    print(f"  keeper --help                {help_s * 1e3:7.1f} ms  ratio {ratio:.2f} (goal <= 1.5)")

    starts, statuses, stops, floors, typers = [], [], [], [], []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "RBEE_HOME": home, "NO_COLOR": "1"}
        for _ in range(RUNS):
            port = str(_free_port())
            keeper = [py, "-m", "keeper", "--queen-url", f"http://127.0.0.1:{port}"]
            starts.append(_wall([*keeper, "queen", "start", "--port", port], env))
            # Paired by round: each figure next to a typer import timed just before it.
            typers.append(_wall([py, "-c", "import typer"]))
            statuses.append(_wall([*keeper, "status"], env))
            floors.append(_wall([py, "-c", FLOOR]))
            stops.append(_wall([*keeper, "queen", "stop"], env))
    median = statistics.median(starts)
    spread = f"min {min(starts):.2f}, max {max(starts):.2f}"
    print(f"  keeper queen start → healthy {median:7.2f} s   median ({spread})")
    for label, walls, goal in (
        ("keeper status (running queen)", statuses, "(goal <= 2)"),
        ("keeper queen stop", stops, "(goal <= 2)"),
        ("floor: typer+httpx+rich import", floors, "(reference)"),
    ):
        ratio = statistics.median(w / t for w, t in zip(walls, typers, strict=True))
        print(
            f"  {label:<29}{statistics.median(walls) * 1e3:7.1f} ms  "
            f"{ratio:.2f}x import typer {goal}"
        )


if __name__ == "__main__":
    quick_flag(__doc__, "5 runs instead of 15")  # module constants above already read it
    main()
