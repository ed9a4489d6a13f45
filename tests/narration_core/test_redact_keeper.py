"""Redaction as a user meets it: the real keeper relaying a child's output in `--json`."""

from __future__ import annotations

import json

from redaction_corpus import ORDINARY

# A child that prints a coloured secret, then everyday lines that only mention secrets.
EVERYDAY = ["'/etc/passwd': Permission denied", "token: expired", *ORDINARY[8:20]]


def _printf_arg(lines: list[str]) -> str:
    """`printf` format text for `lines`: `%` doubled, one `\\n` after each."""
    return "".join(line.replace("\\", "\\\\").replace("%", "%%") + "\\n" for line in lines)


def test_keeper_json_redacts_raw_and_keeps_ordinary_lines(keeper) -> None:
    """`keeper --json run` never shows a coloured line's secret (not even in fields.raw),
    and passes ordinary lines that mention passwords and tokens through unchanged."""
    fmt = "\\033[31mpassword=hunter3\\033[0m\\n" + _printf_arg(EVERYDAY)
    result = keeper("--json", "run", "--", "printf", fmt)
    assert result.returncode == 0, result.stderr
    assert "hunter3" not in result.stdout
    assert "hunter3" not in result.stderr
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    outputs = [event for event in outputs if event["event"] == "output"]
    coloured, *rest = outputs
    assert coloured["human"] == "password=[REDACTED]"
    assert "[REDACTED]" in coloured["fields"]["raw"]
    assert [event["human"] for event in rest] == EVERYDAY


def test_keeper_advice_about_tokens_is_not_redacted(keeper) -> None:
    """The keeper's own error telling the user to pass a token reads as written."""
    result = keeper("queen", "start", "--bind", "0.0.0.0", "--port", "7911")
    assert result.returncode == 2, result.stderr
    assert "pass --token or set RBEE_TOKEN" in result.stderr
    assert "[REDACTED]" not in result.stderr
