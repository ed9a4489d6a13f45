"""A bench stopped by a signal stops every daemon it started (bench/_daemons.py).

bench_spawn has the keeper start a queen and a hive, which run detached in their own
sessions, and the hive spawns workers in sessions of their own: killing the bench's
process group reaches none of them. SIGTERM (a timeout) or SIGINT (Ctrl-C) sent to the
bench alone must still leave nothing of its RBEE_HOME running, and no home behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from keeper.daemons import PidFile
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[1]
UP_DEADLINE_S = 40.0  # the bench starts a queen, a hive and a worker on a loaded 2-core box
STOP_DEADLINE_S = 20.0  # SIGTERM, 5 s of grace, SIGKILL: the bench's own bound is ~7 s


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # exited meanwhile
        return ""


def processes_of(tmp: Path) -> list[psutil.Process]:
    """Live processes whose RBEE_HOME is inside `tmp` (the bench makes its home there)."""
    found = []
    for proc in psutil.process_iter():
        # Gone meanwhile, a zombie, or not ours to read: none of them belongs to the bench.
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("RBEE_HOME", "").startswith(f"{tmp}{os.sep}") and alive(proc):
                found.append(proc)
    return found


def bench_home(tmp: Path) -> Path | None:
    homes = list(tmp.glob("rbee-bench-spawn-*"))
    return homes[0] if homes else None


def queen_is_up(tmp: Path) -> bool:
    """The bench's queen answers /health (its pidfile names where)."""
    home = bench_home(tmp)
    record = PidFile(home / "run", "queen").read() if home else None
    if record is None:
        return False
    try:
        return httpx.get(f"{record.url}/health", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def worker_is_up(tmp: Path) -> bool:
    return any("llm-worker-rbee" in cmdline(p) for p in processes_of(tmp))


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """bench_spawn.py --quick running with its temporary folders in a fresh `tmp`; whatever
    it leaves behind is killed afterwards, so a failing test leaks nothing either."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    with (tmp_path / "bench.out").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bench_spawn.py"), "--quick"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, tmp
    finally:
        process.kill()
        process.wait()
        for proc in processes_of(tmp):
            with contextlib.suppress(psutil.Error):
                proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "stage"),
    [
        (signal.SIGTERM, "queen"),
        (signal.SIGINT, "queen"),
        (signal.SIGTERM, "worker"),
    ],
    ids=["SIGTERM-queen-up", "SIGINT-queen-up", "SIGTERM-worker-up"],
)
def test_a_signalled_bench_stops_what_it_started(
    bench: tuple[subprocess.Popen[bytes], Path], tmp_path: Path, signum: int, stage: str
) -> None:
    """A signal once the queen (or a worker) is up: the bench dies by that signal and none of
    its processes outlives the deadline; its RBEE_HOME is gone.

    1. Start bench_spawn; wait until its queen answers /health (or a worker runs).
    2. Note every process of its home, and the bench's own descendants.
    3. Send the signal to the bench alone, as `timeout` or `kill` would.
    Result: the bench exits by that signal, every noted process has exited, no process
    carries its home, and the home folder is removed.
    """
    process, tmp = bench
    up = queen_is_up if stage == "queen" else worker_is_up
    wait_until(lambda: up(tmp) or process.poll() is not None, f"the bench's {stage}", UP_DEADLINE_S)
    assert process.poll() is None, (tmp_path / "bench.out").read_text()
    home = bench_home(tmp)
    assert home is not None
    started = processes_of(tmp) + psutil.Process(process.pid).children(recursive=True)
    assert any("-m queen" in cmdline(p) for p in started), started

    process.send_signal(signum)

    process.wait(timeout=STOP_DEADLINE_S)
    output = (tmp_path / "bench.out").read_text()
    assert process.returncode == -signum, output
    assert "Traceback" not in output
    wait_until(
        lambda: not any(alive(p) for p in started),
        "every process the bench started to exit",
        STOP_DEADLINE_S,
    )
    assert processes_of(tmp) == []
    assert not home.exists()
