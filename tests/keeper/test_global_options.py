"""The keeper's own options (--json, --no-color, --queen-url, -v) work after the command
too, and never take what belongs to `keeper run`'s command."""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.support import closed_hive_url

ARGV = "import sys; print(sys.argv[1:])"  # a command that prints the arguments it got


def test_global_options_after_the_command(keeper: Any, free_tcp_port: int) -> None:
    """`status --json`, `jobs list --json`, `queen status --json`, `jobs --json list` and
    `status --no-color` run as with the flag first; `--queen-url` after the command is the
    URL asked, `infer --json --queen-url URL …` included (exit 3, not a usage error)."""
    assert keeper("queen", "start", "--port", str(free_tcp_port)).returncode == 0
    try:
        status = keeper("status", "--json")
        assert keeper("hive", "list").returncode == 0  # a job for the lists (status is none)
        listed = keeper("jobs", "list", "--json")
        grouped = keeper("jobs", "--json", "list")
        queen = keeper("queen", "status", "--json")
        plain = keeper("status", "--no-color")
    finally:
        assert keeper("queen", "stop").returncode == 0
    for result in (status, listed, grouped, queen, plain):
        assert result.returncode == 0, result.stderr
    (shown,) = [json.loads(line) for line in status.stdout.splitlines()]
    assert shown["event"] == "status" and "hives" in shown["result"]
    for result in (listed, grouped):
        jobs = [json.loads(line) for line in result.stdout.splitlines()]
        assert jobs and {job["event"] for job in jobs} == {"job"}
    assert [json.loads(line)["event"] for line in queen.stdout.splitlines()] == ["queen"]
    assert "\x1b[" not in plain.stdout and "queen" in plain.stdout

    elsewhere = closed_hive_url()  # nothing listens there: what each command reports
    infer = ["infer", "--json", "--no-autostart", "--model", "builtin:tiny", "hi"]
    for argv in (
        ["status", "--queen-url", elsewhere],
        ["jobs", "list", f"--queen-url={elsewhere}"],
        [*infer, "--queen-url", elsewhere],
    ):
        result = keeper(*argv)
        assert result.returncode == 3, (argv, result.stderr)
        assert f"queen is not reachable at {elsewhere}" in result.stderr, argv


def test_verbose_after_the_command_shows_the_traceback(keeper: Any) -> None:
    """`keeper status -v` on an error nobody foresaw prints its traceback, as `keeper -v
    status` does."""
    (keeper.home / "run" / "queen.pid").mkdir(parents=True)
    result = keeper("status", "-v")
    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr and "IsADirectoryError" in result.stderr


def test_after_run_s_command_or_dashes_flags_are_the_command_s(keeper: Any) -> None:
    """`keeper run -- CMD --json` and `keeper run CMD --json` hand `--json` to CMD and print
    plain lines; `keeper run --json -- CMD` is the keeper's JSON output."""
    command = [sys.executable, "-c", ARGV]
    after_dashes = keeper("run", "--", *command, "--json", "-v")
    after_command = keeper("run", *command, "--json")
    keepers = keeper("run", "--json", "--", *command, "x")
    assert after_dashes.returncode == 0, after_dashes.stderr
    assert after_dashes.stdout == "['--json', '-v']\n"
    assert after_command.returncode == 0, after_command.stderr
    assert after_command.stdout == "['--json']\n"
    assert keepers.returncode == 0, keepers.stderr
    events = [json.loads(line) for line in keepers.stdout.splitlines()]
    assert {"event": "output", "human": "['x']"}.items() <= next(
        e for e in events if e["event"] == "output"
    ).items()
