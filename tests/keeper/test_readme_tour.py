"""The README's tour, run as a reader would: its commands exist and print what it shows."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import RbeePaths
from narration_core import parse_line

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
WAIT_S = 30.0  # deadline for one keeper command on a loaded 2-core machine
README_PORT = "7833"  # the default port the README's sample shows
README_PID = "4242"
DEPLOY_SH = """#!/bin/sh
echo '[deploy    ] build          : Building the site'
echo 'plain output from the script'
exit 3
"""


def _block_after(marker: str) -> list[str]:
    """The lines of the first fenced code block after `marker` in the README."""
    rest = README[README.index(marker) :]
    start = rest.index("```")
    body = rest[rest.index("\n", start) + 1 :]
    return body[: body.index("```")].rstrip("\n").splitlines()


def _tour() -> list[list[str]]:
    """The tour's keeper commands as argv lists, without the leading `keeper`."""
    commands = []
    for line in _block_after("## A short tour"):
        if line.startswith("keeper "):
            command = re.split(r"\s{2,}#", line)[0]
            commands.append(shlex.split(command)[1:])
    return commands


def _sample_lines() -> list[str]:
    return _block_after("Narration looks like this")


def _default_folders() -> tuple[str, str]:
    """The log and state folders without RBEE_HOME, written as the README writes them."""
    saved = os.environ.pop("RBEE_HOME")
    try:
        paths = RbeePaths.resolve()
    finally:
        os.environ["RBEE_HOME"] = saved
    home = str(Path.home())
    return str(paths.logs).replace(home, "~", 1), str(paths.state).replace(home, "~", 1)


def _as_in_readme(text: str, home: Path, port: int) -> list[str]:
    """This run's output with its port, pid and folders replaced by the README's."""
    logs, state = _default_folders()
    text = text.replace(str(home / "logs"), logs).replace(str(home / "state"), state)
    text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{README_PORT}")
    return re.sub(r"\(pid \d+\)", f"(pid {README_PID})", text).splitlines()


def _json_lines(stdout: str) -> list[dict]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert lines and all(isinstance(line, dict) and "event" in line for line in lines)
    return lines


def test_every_tour_command_exists() -> None:
    """Each keeper command the tour names is in the CLI (its --help exits 0)."""
    tour = _tour()
    assert len(tour) >= 8
    for args in tour:
        if "--" in args:  # `run -- CMD`: --help after -- would be the command's
            args = args[: args.index("--")]
        helped = subprocess.run(
            [sys.executable, "-m", "keeper", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert helped.returncode == 0, f"keeper {shlex.join(args)}: {helped.stderr}"


def test_readme_tour_prints_what_the_readme_shows(
    keeper, rbee_home: Path, free_tcp_port: int, tmp_path: Path
) -> None:
    """The tour's queen commands, run in order on a free port, print what the README says:
    the narration sample line for line, tables, job logs, a script's output and exit code,
    JSON events, the queen's log, and a clean stop."""
    tour = [" ".join(args) for args in _tour()]
    for step in (
        "queen start",
        "status",
        "jobs list",
        "jobs logs <ID> -f",
        "run -- ./deploy.sh",
        "--json status",
        "queen logs -f",
        "queen stop",
    ):
        assert step in tour, f"the README tour no longer has `keeper {step}`"
    port = str(free_tcp_port)

    started = keeper("queen", "start", "--port", port)
    assert started.returncode == 0, started.stderr
    assert _as_in_readme(started.stdout, rbee_home, free_tcp_port) == _sample_lines()

    try:
        status = keeper("status")
        assert status.returncode == 0, status.stderr
        assert f"http://127.0.0.1:{port}" in status.stdout and "queen" in status.stdout
        # Looking is no job; in the README's tour the hive, model and worker steps make
        # the jobs the list shows: here one hive_list does.
        assert keeper("hive", "list").returncode == 0

        listed = keeper("jobs", "list")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split("\n")[0].split() == [
            "JOB",
            "STATE",
            "OPERATION",
            "CREATED",
            "ELAPSED",
        ]
        (job,) = _json_lines(keeper("--json", "jobs", "list").stdout)
        assert job["event"] == "job" and job["state"] == "completed"
        assert _json_lines(keeper("--json", "jobs", "show", job["job_id"]).stdout)[0]["event"]

        logs = keeper("jobs", "logs", job["job_id"], "-f")
        assert logs.returncode == 0, logs.stderr
        events = [parse_line(line) for line in logs.stdout.splitlines()]
        assert all(e is not None for e in events) and events[-1].human == "job completed"

        (tmp_path / "deploy.sh").write_text(DEPLOY_SH)
        (tmp_path / "deploy.sh").chmod(0o755)
        ran = subprocess.run(
            [sys.executable, "-m", "keeper", "run", "--", "./deploy.sh"],
            env=keeper.env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert ran.returncode == 3, ran.stderr
        assert "[deploy    ] build          : Building the site" in ran.stdout.splitlines()
        assert "plain output from the script" in ran.stdout.splitlines()

        as_json = keeper("--json", "status")
        assert as_json.returncode == 0, as_json.stderr
        (snapshot,) = _json_lines(as_json.stdout)
        assert snapshot["event"] == "status" and "hives" in snapshot["result"]
        assert _json_lines(keeper("--json", "queen", "status").stdout)[0]["event"] == "queen"

        _follow_queen_log_then_interrupt(keeper)
    finally:
        stopped = keeper("queen", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "Queen stopped" in stopped.stdout


def _follow_queen_log_then_interrupt(keeper) -> None:
    """`keeper queen logs -f` shows the queen's narration and ends on Ctrl-C (exit 130)."""
    with subprocess.Popen(
        [sys.executable, "-m", "keeper", "queen", "logs", "-f"],
        env=keeper.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as follower:
        try:
            assert follower.stdout is not None
            for line in follower.stdout:  # the log already holds the ready line: no waiting
                event = parse_line(line)
                if event is not None and event.action == "ready":
                    break
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=WAIT_S) == 130
        finally:
            if follower.poll() is None:
                follower.kill()


@pytest.mark.parametrize("no_color", [False, True])
def test_no_color_tables_carry_no_styles(keeper, free_tcp_port: int, no_color: bool) -> None:
    """On a terminal, `jobs list` and `status` tables are bold; with --no-color they hold
    no escape sequence at all."""
    import pty

    port = str(free_tcp_port)
    assert keeper("queen", "start", "--port", port).returncode == 0
    try:
        env = {**keeper.env(), "TERM": "xterm-256color", "COLUMNS": "160"}
        del env["NO_COLOR"]
        flags = ["--no-color"] if no_color else []
        assert keeper("hive", "list").returncode == 0  # a job for the list to show
        for args in (["status"], ["jobs", "list"]):
            leader, follower = pty.openpty()
            with os.fdopen(leader, "rb", buffering=0) as screen:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "keeper", *flags, *args],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=follower,
                    stderr=follower,
                )
                os.close(follower)
                shown = bytearray()
                while True:
                    try:
                        chunk = screen.read(65536)
                    except OSError:  # EIO: the keeper exited and closed the terminal
                        break
                    if not chunk:
                        break
                    shown += chunk
                assert proc.wait(timeout=WAIT_S) == 0, shown.decode()
            assert (b"\x1b[" in shown) != no_color, shown.decode()
    finally:
        assert keeper("queen", "stop").returncode == 0
