"""`keeper queen start` and `keeper hive start` when RBEE_HOME's disk is full.

RBEE_HOME is a 2 MiB tmpfs filled to the last byte (or to a few pages, room for the
pidfile but not for the daemon's job table). The keeper must say so in one sentence,
leave no daemon running and nothing half-written behind, and start normally once there
is room again.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from tests.support import KeeperRunner, fill_disk

ROOM_BYTES = [0, 12 * 1024]  # nothing at all; a pidfile's worth, not a job table's


def daemons_of(home: Path) -> list[psutil.Process]:
    """rbee daemons running with RBEE_HOME=home."""
    found = []
    for proc in psutil.process_iter(["environ"]):
        try:
            if (proc.info["environ"] or {}).get("RBEE_HOME") == str(home):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def leave_room(filler: Path, room: int) -> None:
    with filler.open("r+b") as f:
        f.truncate(max(0, os.fstat(f.fileno()).st_size - room))


@pytest.mark.parametrize("room", ROOM_BYTES)
@pytest.mark.parametrize("daemon", ["queen", "hive"])
def test_start_on_a_full_disk_says_so_and_leaves_nothing_behind(
    small_home: Path,
    free_tcp_port: int,
    daemon: str,
    room: int,
) -> None:
    """A start on a full disk exits 1 with one sentence naming the full disk, no traceback,
    no daemon and no half-written file left; once there is room the same start works."""
    keeper = KeeperRunner(small_home)
    url = f"http://127.0.0.1:{free_tcp_port}"
    start = ("--queen-url", url, daemon, "start", "--port", str(free_tcp_port))
    (small_home / "run").mkdir(mode=0o700)
    leave_room(fill_disk(small_home), room)

    try:
        failed = keeper(*start)
        assert failed.returncode == 1, failed.stderr
        assert "Traceback" not in failed.stdout + failed.stderr
        [sentence] = failed.stderr.splitlines()
        assert "is full" in sentence and "free some space" in sentence, sentence
        assert daemons_of(small_home) == []
        leftovers = [p.name for p in (small_home / "run").iterdir() if p.suffix != ".lock"]
        assert leftovers == []

        (small_home / "fill").unlink()
        started = keeper(*start)
        assert started.returncode == 0, started.stdout + started.stderr
        stopped = keeper("--queen-url", url, daemon, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert daemons_of(small_home) == []
    finally:
        for proc in daemons_of(small_home):  # a failed run leaves none for the next one
            proc.kill()


def test_foreground_start_on_a_full_disk_says_so_and_leaves_nothing_behind(
    small_home: Path,
    free_tcp_port: int,
) -> None:
    """`queen start --foreground` on a full disk (no room for even the pidfile): exit 1, one
    sentence naming the full disk (not "the output"), no queen left running."""
    keeper = KeeperRunner(small_home)
    (small_home / "run").mkdir(mode=0o700)
    fill_disk(small_home)
    try:
        failed = keeper("queen", "start", "--foreground", "--port", str(free_tcp_port))
        assert failed.returncode == 1, failed.stderr
        [sentence] = failed.stderr.splitlines()
        assert "is full" in sentence and "free some space" in sentence, sentence
        assert daemons_of(small_home) == []
    finally:
        for proc in daemons_of(small_home):
            proc.kill()
