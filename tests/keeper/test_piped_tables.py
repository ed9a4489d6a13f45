"""Tables read by another program (`keeper jobs list | awk`) hold whole rows."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

WAIT_S = 60.0  # a keeper command on a loaded 2-core machine


def _piped(keeper: Any, *args: str, columns: str | None) -> subprocess.CompletedProcess[str]:
    """`keeper ARGS` with stdout a pipe, COLUMNS set (a narrow window's) or not."""
    env = keeper.env()
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("columns", [None, "40"], ids=["default", "COLUMNS=40"])
def test_piped_tables_are_whole_rows_without_trailing_blanks(
    keeper: Any, free_tcp_port: int, columns: str | None
) -> None:
    """`jobs list` and `status` into a pipe print every cell whole (the full job ids `jobs
    list --json` gives, no `…`) however narrow the window, and no line ends in blanks."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    assert keeper("queen", "start", "--port", str(free_tcp_port)).returncode == 0
    try:
        assert keeper("hive", "list").returncode == 0  # a job for the list
        status = _piped(keeper, "status", columns=columns)
        listed = _piped(keeper, "jobs", "list", columns=columns)
        as_json = _piped(keeper, "jobs", "list", "--json", columns=columns)
    finally:
        assert keeper("queen", "stop").returncode == 0
    for result in (status, listed, as_json):
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout
        assert [line.rstrip() for line in result.stdout.splitlines()] == (
            result.stdout.splitlines()
        )
    assert url in status.stdout.split()
    ids = [json.loads(line)["job_id"] for line in as_json.stdout.splitlines()]
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["JOB", "STATE", "OPERATION", "CREATED", "ELAPSED"]
    assert sorted(row.split()[0] for row in rows) == sorted(ids) and ids
    assert all(len(row.split()) >= len(header.split()) for row in rows), rows
