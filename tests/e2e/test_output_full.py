"""Keeper commands whose stdout is a full disk (`> /dev/full`): one sentence, exit 1.

docs/failures.md promises it for every command ("The keeper's own output"); `keeper run`
has its own test (tests/keeper/test_output_lost.py). Here: `keeper infer`'s text, the
status tables and a JSON listing, against a real queen, hive and worker.
"""

from __future__ import annotations

import pytest

from tests.support import Chain, keeper_into_a_left_pipe

SENTENCE = (
    "keeper: could not write the output (No space left on device), so the rest of it was "
    "dropped; free space where it goes, or send it elsewhere\n"
)


@pytest.mark.parametrize(
    "args",
    [
        ["infer", "--no-autostart", "--model", "builtin:tiny", "--max-tokens", "8", "hi"],
        ["status"],
        ["--json", "jobs", "list"],
    ],
    ids=["infer", "status", "jobs-list-json"],
)
def test_stdout_on_a_full_disk_ends_in_one_sentence(
    chain: Chain,
    args: list[str],
) -> None:
    """Output to /dev/full: exit 1 and the one output-lost sentence on stderr, no traceback."""
    chain.run("model", "download", "builtin:tiny")  # so infer's tokens are the output
    with open("/dev/full", "w") as full:
        result = chain.run(*args, ok=False, stdout=full)
    assert result.returncode == 1
    assert result.stderr.endswith(SENTENCE), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["status"], ["jobs", "list"]], ids=["status", "jobs-list"])
def test_a_reader_gone_before_the_tables_is_not_an_error(
    chain: Chain,
    args: list[str],
) -> None:
    """`keeper status | head -1` with head gone before the keeper prints: exit 0, nothing
    on stderr (a reader that leaves is not an error; Rich alone would exit 1)."""
    args = ["--queen-url", chain.queen_url, *args]
    assert keeper_into_a_left_pipe(args, chain.keeper.env()) == (0, "")
