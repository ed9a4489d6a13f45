"""The live view's wait indicator: it moves, says what it waits for and for how long."""

from __future__ import annotations

import io
import re

import anyio
import pytest
from rich.console import Console

from keeper.render import Renderer
from keeper.settings import KeeperSettings

DOTS = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"  # Rich's "dots" spinner frames
FRAME = re.compile(rf"([{DOTS}]) (.+?) · (\d+\.\d)s")
WAIT_S = 10.0  # generous deadline for a loaded 2-core machine; the frames come at 8 fps


@pytest.fixture(autouse=True)
def terminal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Live mode depends on TERM and NO_COLOR; pin them so the test decides the mode."""
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)


def _frames(buffer: io.StringIO) -> list[tuple[str, str, float]]:
    """(spinner frame, status text, elapsed seconds) of every status line drawn so far."""
    return [(m[1], m[2], float(m[3])) for m in FRAME.finditer(buffer.getvalue())]


async def _until(condition) -> None:
    with anyio.fail_after(WAIT_S):
        while not condition():  # noqa: ASYNC110 - the frame thread writes a StringIO: no event
            await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_spinner_moves_counts_up_and_is_replaced() -> None:
    """Across refreshes the spinner shows several frames and a growing elapsed time,
    and a new status replaces the old one, which is never drawn again."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True, color_system=None)
    with Renderer(KeeperSettings(), console=console) as renderer:
        assert renderer.mode == "live"
        renderer.status("Starting queen-rbee on 127.0.0.1:7900")
        await _until(lambda: len({f[0] for f in _frames(buffer)}) >= 3)
        first = _frames(buffer)
        assert {text for _, text, _ in first} == {"Starting queen-rbee on 127.0.0.1:7900"}
        elapsed = [seconds for _, _, seconds in first]
        assert elapsed == sorted(elapsed) and elapsed[-1] > elapsed[0]

        drawn = len(buffer.getvalue())
        renderer.status("queen-rbee is running; Ctrl-C stops it")
        await _until(lambda: len(_frames(io.StringIO(buffer.getvalue()[drawn:]))) >= 2)
        later = _frames(io.StringIO(buffer.getvalue()[drawn:]))
        assert later[-1][1] == "queen-rbee is running; Ctrl-C stops it"
        assert later[-1][2] < elapsed[-1] + 1.0  # the clock restarted with the new wait

        renderer.status(None)
        drawn = len(buffer.getvalue())
        await _until(lambda: len(buffer.getvalue()) > drawn)
    assert _frames(io.StringIO(buffer.getvalue()[drawn:])) == []
