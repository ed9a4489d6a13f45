"""Redaction as a user meets it: the real keeper relaying a child's output in `--json`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest
from redaction_corpus import ORDINARY
from rich.console import Console

from keeper.output import Renderer
from keeper.settings import KeeperSettings
from narration_core.capture import ProcessNarrationCapture
from tests.support import Screen

DEADLINE_S = 30.0  # seconds any single wait may take on a slow 2-core machine

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


def test_real_shell_errors_pass_unchanged(keeper) -> None:
    """Errors real commands print about password and token files reach `--json` as printed."""
    script = "cat /etc/passwd-x; ls /nonexistent/token-dir; echo 'password: required'"
    result = keeper("--json", "run", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    # stderr and stdout are two pipes: their lines may arrive in either order.
    shown = sorted(event["human"] for event in events if event["event"] == "output")
    assert len(shown) == 3, shown
    assert any(line.endswith("/etc/passwd-x: No such file or directory") for line in shown)
    assert any("'/nonexistent/token-dir': No such file or directory" in line for line in shown)
    assert "password: required" in shown
    assert "[REDACTED]" not in result.stdout


def test_keeper_advice_about_tokens_is_not_redacted(keeper) -> None:
    """The keeper's own error telling the user to pass a token reads as written."""
    result = keeper("queen", "start", "--bind", "0.0.0.0", "--port", "7911")
    assert result.returncode == 2, result.stderr
    assert "pass --token or set RBEE_TOKEN" in result.stderr
    assert "[REDACTED]" not in result.stderr


GATED_SECRET_BAR = """
import os, sys, time
sys.stdout.write("\\rupload 10% token=abc123def456")
sys.stdout.flush()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
sys.stdout.write("\\rupload 100% token=abc123def456\\n")
"""


@pytest.mark.anyio
async def test_live_progress_line_is_redacted(tmp_path: Path) -> None:
    """A `\\r` progress line drawn in place on a terminal never shows a secret it holds."""
    screen = Screen("upload 10%")
    console = Console(file=screen, force_terminal=True, width=100, color_system=None)
    go = tmp_path / "go"
    argv = [sys.executable, "-c", GATED_SECRET_BAR, str(go)]
    with Renderer(KeeperSettings(), console=console, mode="live") as renderer:
        capture = ProcessNarrationCapture(on_progress=renderer.progress)
        async with await capture.spawn(argv) as proc, anyio.create_task_group() as tg:
            tg.start_soon(proc.wait)  # relays output while it runs
            with anyio.fail_after(DEADLINE_S):
                await anyio.to_thread.run_sync(screen.drawn.wait, abandon_on_cancel=True)
            go.touch()
            with anyio.fail_after(DEADLINE_S):
                await proc.wait()
        assert proc.returncode == 0
    shown = screen.getvalue()
    assert "upload 100% token=[REDACTED]" in shown
    assert "abc123def456" not in shown
