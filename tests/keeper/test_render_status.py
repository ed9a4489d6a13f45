"""The live view's wait indicator: it moves, says what it waits for and for how long."""

from __future__ import annotations

import io
import re

import anyio
import pytest
from rich.console import Console

from keeper.output import Renderer
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


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _read_pty(fd: int, seen: bytearray, until, timeout: float = 30.0) -> str:
    """Read the terminal's output into `seen` until `until(text)` holds; the text so far."""
    import os
    import select
    import time

    deadline = time.monotonic() + timeout
    while True:
        text = ANSI.sub("", seen.decode("utf-8", "replace"))
        if until(text):
            return text
        left = deadline - time.monotonic()
        assert left > 0, f"terminal output never matched; it shows:\n{text[-2000:]}"
        if select.select([fd], [], [], left)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # EIO: the keeper closed the terminal
                assert until(ANSI.sub("", seen.decode("utf-8", "replace"))), text[-2000:]


def test_foreground_status_says_running_once_the_queen_is_ready(keeper, free_tcp_port) -> None:
    """On a terminal, `queen start --foreground` stops saying "Starting" once the queen is
    ready and says it runs and how to stop it; Ctrl-C then ends it (exit 0)."""
    import fcntl
    import os
    import pty
    import signal
    import struct
    import subprocess
    import sys
    import termios

    env = {**keeper.env(), "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    env.pop("NO_COLOR")
    port = str(free_tcp_port)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "keeper", "queen", "start", "--foreground", "--port", port],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    seen = bytearray()
    try:
        text = _read_pty(leader, seen, lambda t: "Queen is ready" in t)
        ready_at = text.index("Queen is ready")
        text = _read_pty(
            leader, seen, lambda t: len(FRAME.findall(t[t.index("Queen is ready") :])) >= 3
        )
        after = FRAME.findall(text[ready_at:])
        assert all(
            "queen-rbee running at" in status and "Ctrl-C" in status for _, status, _ in after
        ), after
        assert any("Starting queen-rbee" in status for _, status, _ in FRAME.findall(text))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) in (0, 130)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
