"""`keeper ui`: finds (or starts) the queen, prints its dashboard address, opens a browser."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def stop_queen(keeper: Any) -> Iterator[None]:
    """Stop whatever queen the test started under its RBEE_HOME."""
    yield
    keeper("queen", "stop", timeout=60.0)


def keeper_with_env(
    keeper: Any, env: dict[str, str], *args: str, drop: tuple[str, ...] = ()
) -> Any:
    full = {k: v for k, v in {**keeper.env(), **env}.items() if k not in drop}
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120.0,
        stdin=subprocess.DEVNULL,
    )


def test_ui_starts_a_local_queen_when_none_runs(
    keeper: Any, stop_queen: None, free_tcp_port_factory: Callable[[], int]
) -> None:
    """With no queen running, `keeper ui --no-open` starts one and prints a dashboard
    address that serves the page."""
    port = free_tcp_port_factory()
    result = keeper("ui", "--no-open", "--port", str(port), timeout=120.0)
    assert result.returncode == 0, result.stdout + result.stderr
    dashboard = f"http://127.0.0.1:{port}/"
    assert f"Dashboard: {dashboard}" in result.stdout
    page = httpx.get(dashboard, timeout=10)
    assert page.status_code == 200
    assert 'src="ui/app.js"' in page.text


def test_ui_opens_the_running_queens_page_in_the_browser(
    keeper: Any,
    stop_queen: None,
    rbee_home: Path,
    tmp_path: Path,
    free_tcp_port_factory: Callable[[], int],
) -> None:
    """With this RBEE_HOME's queen running (with a token), `keeper ui` hands its dashboard
    address to the user's browser through webbrowser (BROWSER), token-free, and starts no
    second queen."""
    port = free_tcp_port_factory()
    token = {"RBEE_TOKEN": "ui-test-token"}
    started = keeper_with_env(keeper, token, "queen", "start", "--port", str(port))
    assert started.returncode == 0, started.stdout + started.stderr
    pid = json.loads((rbee_home / "run" / "queen.pid").read_text())["pid"]
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys; open({str(opened)!r}, 'a').write(sys.argv[1] + '\\n')\n")
    env = {**token, "BROWSER": f"{sys.executable} {browser} %s"}
    result = keeper_with_env(keeper, env, "ui")
    assert result.returncode == 0, result.stdout + result.stderr
    dashboard = f"http://127.0.0.1:{port}/"
    assert opened.read_text() == f"{dashboard}\n"
    assert "RBEE_TOKEN" in result.stdout  # the page will ask for it
    assert "ui-test-token" not in result.stdout + result.stderr + opened.read_text()
    assert json.loads((rbee_home / "run" / "queen.pid").read_text())["pid"] == pid


def test_ui_with_an_unreachable_queen_url_says_so(
    keeper: Any, free_tcp_port_factory: Callable[[], int]
) -> None:
    """A --queen-url where nothing answers exits 3 with one sentence and starts nothing."""
    url = f"http://127.0.0.1:{free_tcp_port_factory()}"
    result = keeper("--queen-url", url, "ui", "--no-open")
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"queen is not reachable at {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_ui_without_a_graphical_session_prints_the_address_only(
    keeper: Any, stop_queen: None, free_tcp_port_factory: Callable[[], int]
) -> None:
    """On Linux with no DISPLAY, WAYLAND_DISPLAY or BROWSER (an SSH login), `keeper ui`
    prints the address and says to open it, instead of starting a text browser here."""
    port = free_tcp_port_factory()
    drop = ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")
    result = keeper_with_env(keeper, {}, "ui", "--port", str(port), drop=drop)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Dashboard: http://127.0.0.1:{port}/" in result.stdout
    assert "No graphical session here; open the address above in a browser" in result.stdout
