"""Commands that have not landed point at what works; hive list/status reach the queen."""

from __future__ import annotations

import json
import re

import pytest


def _working(keeper, *args: str) -> list[list[str]]:
    """The commands a refused command lists as working, e.g. [["queen", "start"], ["run"]]."""
    result = keeper(*args)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "issue" not in line
    working = line.split("what works today: ", 1)[1].split(", ")
    commands = []
    for entry in working:
        words = entry.split()
        assert words[0] == "keeper", entry
        subs = words[2].split("|") if len(words) == 3 else [None]
        commands += [[words[1]] if sub is None else [words[1], sub] for sub in subs]
    for must in (["queen", "start"], ["status"], ["run"], ["jobs", "logs"], ["hive", "list"]):
        assert must in commands, line
    assert ["infer"] in commands and ["hive", "install"] not in commands
    return commands


@pytest.mark.parametrize("args", [("hive", "install", "gpu1")])
def test_refused_command_lists_what_works_today(keeper, args: tuple[str, ...]) -> None:
    """A refused command exits 2 with one sentence listing the working commands, not
    itself, not another refused one."""
    assert _working(keeper, *args) == _working(keeper, "hive", "install", "gpu1")


def test_every_command_listed_as_working_exists(keeper) -> None:
    """Each command the refusal lists is a real command: its --help exits 0."""
    for command in _working(keeper, "hive", "install", "gpu1"):
        assert keeper(*command, "--help").returncode == 0, command


def test_hive_list_and_status_run_as_queen_jobs(keeper, free_tcp_port: int) -> None:
    """`keeper hive list` and `keeper hive status ALIAS` submit hive_list / hive_status to
    the queen and render its answer; an unknown alias is the queen's one-sentence error."""
    assert keeper("queen", "start", "--port", str(free_tcp_port)).returncode == 0
    try:
        listed = keeper("--json", "hive", "list")
        assert listed.returncode == 0, listed.stderr
        events = [json.loads(line) for line in listed.stdout.splitlines()]
        assert any(e.get("action") == "job_start" and e["target"] == "hive_list" for e in events)
        assert events[-1]["event"] == "state" and events[-1]["state"] == "completed"
        assert "hives" in events[-1]["result"]

        unknown = keeper("hive", "status", "nosuchhive")
        assert unknown.returncode == 1
        assert re.search(r"no hive 'nosuchhive' is known to the queen", unknown.stderr)
        assert "hive_status" in unknown.stdout
    finally:
        assert keeper("queen", "stop").returncode == 0
