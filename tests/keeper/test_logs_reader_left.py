"""`keeper queen logs | head -1`: a reader that leaves is not an error for the log printer
either, as for the status tables (tests/e2e/test_output_full.py)."""

from __future__ import annotations

import pytest

from tests.support import keeper_into_a_left_pipe


@pytest.mark.parametrize("json", [False, True])
def test_a_reader_gone_before_the_log_lines_is_not_an_error(keeper, json: bool) -> None:
    """`keeper queen logs` into a pipe whose reader has left: exit 0 and nothing on stderr
    (it said 'unexpected error (BrokenPipeError: …)', exit 1)."""
    logs = keeper.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "queen.log").write_text("".join(f"line {i}\n" for i in range(10)))
    args = [*(["--json"] if json else []), "queen", "logs"]
    assert keeper_into_a_left_pipe(args, keeper.env()) == (0, "")
