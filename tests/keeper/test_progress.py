"""`\r` progress bars under `keeper run`: final state in plain/JSON, live in place on a terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from keeper.output import Renderer
from keeper.settings import KeeperSettings
from narration_core.capture import ProcessNarrationCapture
from tests.support import Screen

DEADLINE_S = 30.0  # seconds any single wait may take on a slow 2-core machine

BAR = """
import sys
for percent in (20, 40, 60, 80, 100):
    sys.stdout.write(f"\\r{percent}%")
    sys.stdout.flush()
sys.stdout.write("\\n")
print("done")
"""


def test_plain_shows_the_final_state_only(keeper: Any, tmp_path: Path) -> None:
    """Plain output shows the bar's final state as one line, with no CR or U+FFFD."""
    (tmp_path / "bar.py").write_text(BAR)
    result = keeper("run", "--", sys.executable, str(tmp_path / "bar.py"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[lines.index("100%") + 1] == "done"
    assert "\ufffd" not in result.stdout and "\r" not in result.stdout
    assert "20%" not in result.stdout


def test_json_carries_the_final_state_only(keeper: Any, tmp_path: Path) -> None:
    """--json carries one output event with the final state; no CR or U+FFFD anywhere."""
    (tmp_path / "bar.py").write_text(BAR)
    result = keeper("--json", "run", "--", sys.executable, str(tmp_path / "bar.py"))
    assert result.returncode == 0, result.stderr
    humans = [json.loads(line)["human"] for line in result.stdout.splitlines()]
    assert "100%" in humans and "done" in humans
    assert "\ufffd" not in result.stdout and "\\r" not in result.stdout
    assert not any("20%" in human for human in humans)


GATED_BAR = """
import os, sys, time
go = sys.argv[1]
for percent in (20, 40):
    sys.stdout.write(f"\\r{percent}%")
    sys.stdout.flush()
while not os.path.exists(go):
    time.sleep(0.01)
sys.stdout.write("\\r100%\\n")
"""


@pytest.mark.anyio
async def test_live_view_shows_progress_in_place(tmp_path: Path) -> None:
    """On a terminal the bar's latest state is drawn before its line ends, then the final
    state is printed as a line."""
    screen = Screen("40%")
    console = Console(file=screen, force_terminal=True, width=80, color_system=None)
    go = tmp_path / "go"
    argv = [sys.executable, "-c", GATED_BAR, str(go)]
    with Renderer(KeeperSettings(), console=console, mode="live") as renderer:
        capture = ProcessNarrationCapture(on_progress=renderer.progress)
        async with await capture.spawn(argv) as proc, anyio.create_task_group() as tg:
            tg.start_soon(proc.wait)  # relays output while it runs
            with anyio.fail_after(DEADLINE_S):
                await anyio.to_thread.run_sync(screen.drawn.wait, abandon_on_cancel=True)
            assert "100%" not in screen.getvalue()
            go.touch()
            with anyio.fail_after(DEADLINE_S):
                await proc.wait()
        assert proc.returncode == 0
    shown = screen.getvalue()
    assert "100%" in shown and "\ufffd" not in shown
    assert "\r100%\r" not in shown  # printed as a line of its own, not drawn over


SECRET_BAR = """
import os, sys, time
sys.stdout.write("\\rpassword=hunter2 at 10%")
sys.stdout.flush()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
sys.stdout.write("\\rdone\\n")
"""


@pytest.mark.anyio
async def test_progress_is_redacted_like_any_line(tmp_path: Path) -> None:
    """A secret in a progress bar's live state is redacted before the progress hook."""
    shown: list[str | None] = []
    seen = anyio.Event()

    def progress(stream: str, text: str | None) -> None:
        shown.append(text)
        seen.set()

    go = tmp_path / "go"
    capture = ProcessNarrationCapture(on_progress=progress)
    argv = [sys.executable, "-c", SECRET_BAR, str(go)]
    async with await capture.spawn(argv) as proc, anyio.create_task_group() as tg:
        tg.start_soon(proc.wait)
        with anyio.fail_after(DEADLINE_S):
            await seen.wait()
        go.touch()
    assert shown and shown[0] is not None and "10%" in shown[0]
    assert not any("hunter2" in (text or "") for text in shown)
