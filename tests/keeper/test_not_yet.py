"""hive list/status reach the queen (no command is pending since `hive install` landed)."""

from __future__ import annotations

import json
import re


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
