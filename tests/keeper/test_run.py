"""`keeper run` as users run it: a real keeper process around a real child."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from narration_core import NarrationEvent, format_line
from tests.support import all_gone, wait_until

DEADLINE_S = 30.0  # seconds any single wait may take on a slow 2-core machine
KEEPER = [sys.executable, "-m", "keeper"]


def run_keeper(*args: str, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess[bytes]:
    """`keeper ARGS...` to completion, stdout and stderr captured as bytes."""
    return subprocess.run([*KEEPER, *args], capture_output=True, timeout=timeout, check=False)


NASTY_CHILD = """
import sys
from narration_core import narrate
narrate("queen-rbee", "start", "Queen starting on port 7833")
print("plain text line")
sys.stdout.write("y" * 10_000_000 + "\\n")
sys.stdout.flush()
sys.stdout.buffer.write(b"bad \\xff\\xfe utf8\\n")
print("\\x1b]0;owned\\x07title")
print("\\x1b[2Jcleared")
sys.stderr.write("a diagnostic\\n")
sys.exit(7)
"""


def test_run_shows_everything_neutralised_and_exits_with_code(
    write_script: Callable[[str], list[str]],
) -> None:
    """keeper survives a hostile child, shows every line without an ESC byte, exits 7."""
    result = run_keeper("run", "--", *write_script(NASTY_CHILD))
    assert result.returncode == 7, result.stderr
    assert b"\x1b" not in result.stdout
    lines = result.stdout.decode().splitlines()
    starting = NarrationEvent("queen-rbee", "start", "Queen starting on port 7833")
    assert format_line(starting) in lines
    assert "plain text line" in lines
    assert sum(len(line) for line in lines if set(line) == {"y"}) == 10_000_000
    assert "bad \ufffd\ufffd utf8" in lines
    assert "title" in lines and "cleared" in lines and "a diagnostic" not in lines
    assert "a diagnostic" in result.stderr.decode().splitlines()  # stderr stays stderr
    assert "exited with code 7" in result.stderr.decode()


def test_run_json_parses_line_by_line(write_script: Callable[[str], list[str]]) -> None:
    """--json prints one JSON event per line, every one tagged with the --job id."""
    result = run_keeper("--json", "run", "--job", "job-42", "--", *write_script(NASTY_CHILD))
    assert result.returncode == 7, result.stderr
    assert b"\x1b" not in result.stdout
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert {e["event"] for e in events} == {"narration", "output"}
    assert all(e["job_id"] == "job-42" for e in events)
    title = next(e for e in events if e["human"] == "title")
    assert title["fields"]["raw"] == "\x1b]0;owned\x07title"
    start = next(e for e in events if e["action"] == "start")
    assert start["actor"] == "queen-rbee" and start["origin"].startswith("pid ")


def test_run_success_exits_zero(write_script: Callable[[str], list[str]]) -> None:
    """A command that succeeds makes keeper exit 0; stdout holds exactly what it printed."""
    result = run_keeper("run", "--", *write_script("print('fine')"))
    assert (result.returncode, result.stdout) == (0, b"fine\n"), result.stderr
    assert "exited with code 0" in result.stderr.decode()  # the keeper's own lines


def test_run_command_not_found(tmp_path: Path) -> None:
    """A missing program exits 127, like a shell, with a one-line error on stderr."""
    result = run_keeper("run", "--", str(tmp_path / "no-such-tool"))
    assert result.returncode == 127
    (line,) = result.stderr.decode().splitlines()
    assert "command not found" in line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_stops_the_tree_and_exits_130(
    tmp_path: Path, write_script: Callable[[str], list[str]], sig: signal.Signals
) -> None:
    """SIGINT (and SIGTERM, SIGHUP) to keeper stops the child and its grandchild, then
    keeper exits 130."""
    pids_file = tmp_path / "pids"
    child = write_script(
        f"""
        import os, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        tmp = {str(pids_file)!r} + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{{os.getpid()}} {{grandchild.pid}}")
        os.rename(tmp, {str(pids_file)!r})
        time.sleep(600)
        """
    )
    keeper = subprocess.Popen(
        [*KEEPER, "run", "--", *child],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so SIGINT reaches keeper alone, as a terminal's would
    )
    try:
        wait_until(pids_file.exists, "the child to report its pids")
        pids = [int(p) for p in pids_file.read_text().split()]
        keeper.send_signal(sig)
        assert keeper.wait(timeout=DEADLINE_S) == 130
        wait_until(lambda: all_gone(pids), "the child's tree to be gone")
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()


def test_run_file_that_is_not_a_program(tmp_path: Path) -> None:
    """An executable file with no #! line exits 126 with one sentence, no traceback."""
    bogus = tmp_path / "no-shebang"
    bogus.write_text("echo hi\n")
    bogus.chmod(0o755)
    result = run_keeper("run", "--", str(bogus))
    assert result.returncode == 126
    (line,) = result.stderr.decode().splitlines()
    assert "cannot execute" in line


def keeper_tree(keeper: subprocess.Popen[bytes], program: str) -> list[psutil.Process]:
    """Wait until `program` runs under keeper; return keeper's descendants (a snapshot)."""
    found: list[psutil.Process] = []

    def started() -> bool:
        found[:] = psutil.Process(keeper.pid).children(recursive=True)
        return any(program in " ".join(p.cmdline()) for p in found if p.is_running())

    wait_until(started, f"{program} to run under keeper")
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_second_signal_kills_a_tree_that_ignores_sigterm(sig: signal.Signals) -> None:
    """A second Ctrl-C (or SIGTERM) during the grace period SIGKILLs the whole tree at
    once, and keeper exits 130 only when nothing it started is left."""
    keeper = subprocess.Popen(
        [*KEEPER, "run", "--", "sh", "-c", "trap '' TERM; sleep 7101"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        tree = keeper_tree(keeper, "sleep 7101")
        keeper.send_signal(sig)
        assert keeper.stderr is not None
        for line in keeper.stderr:  # the first signal is acknowledged before the second
            if b"stopping" in line:
                break
        else:
            pytest.fail("keeper ended without saying it was stopping the command")
        keeper.send_signal(sig)
        started = time.monotonic()
        assert keeper.wait(timeout=DEADLINE_S) == 130
        assert time.monotonic() - started < 4.0  # not the 5 s grace: the kill was at once
        assert all_gone([p.pid for p in tree])
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()
        assert keeper.stderr is not None
        keeper.stderr.close()


def test_sigterm_stops_a_keeper_started_with_ctrl_c_ignored() -> None:
    """A keeper run as a script's background job (SIGINT ignored) still stops, with its
    tree, on SIGTERM."""
    script = f"{shlex.join(KEEPER)} run -- sleep 7201 & echo $! ; wait"
    shell = subprocess.Popen(
        ["bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert shell.stdout is not None
        keeper_pid = int(shell.stdout.readline())
        keeper = psutil.Process(keeper_pid)
        wait_until(lambda: any("sleep" in p.name() for p in keeper.children()), "sleep to start")
        ignored = next(
            line
            for line in Path(f"/proc/{keeper_pid}/status").read_text().splitlines()
            if line.startswith("SigIgn:")
        )
        assert int(ignored.split()[1], 16) & (1 << (signal.SIGINT - 1)), "SIGINT not ignored"
        tree = keeper.children(recursive=True)
        keeper.send_signal(signal.SIGTERM)
        assert shell.wait(timeout=DEADLINE_S) == 0
        wait_until(lambda: all_gone([keeper_pid, *(p.pid for p in tree)]), "keeper and sleep gone")
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
        assert shell.stdout is not None
        shell.stdout.close()


def test_kill_9_of_keeper_takes_its_child_along() -> None:
    """SIGKILL to keeper (no cleanup possible) still ends its child: the kernel sends the
    child its parent-death signal."""
    keeper = subprocess.Popen(
        [*KEEPER, "run", "--", "sleep", "7301"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        (child,) = keeper_tree(keeper, "sleep 7301")
        keeper.kill()
        keeper.wait()
        wait_until(lambda: all_gone([child.pid]), "the child to die with keeper")
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()


def test_stdin_is_passed_to_the_command() -> None:
    """`echo y | keeper run -- sh -c 'read a; echo got:$a'` prints got:y, as a shell does."""
    result = subprocess.run(
        [*KEEPER, "run", "--", "sh", "-c", "read a; echo got:$a"],
        input=b"y\n",
        capture_output=True,
        timeout=DEADLINE_S,
    )
    assert (result.returncode, result.stdout) == (0, b"got:y\n"), result.stderr


def test_plain_output_keeps_streams_apart_and_json_marks_them() -> None:
    """Plain mode: the command's stdout on stdout only, its stderr on stderr; --json puts
    both on stdout, each event marked with its `stream`."""
    command = ["sh", "-c", "echo out; echo err >&2"]
    plain = run_keeper("run", "--", *command)
    assert plain.stdout == b"out\n"
    assert b"err\n" in plain.stderr
    as_json = run_keeper("--json", "run", "--", *command)
    events = [json.loads(line) for line in as_json.stdout.decode().splitlines()]
    streams = {e["human"]: e.get("stream") for e in events if e["event"] == "output"}
    assert streams == {"out": "stdout", "err": "stderr"}
