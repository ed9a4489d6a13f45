"""Fixtures every test folder shares, and the `process` marker's rule.

A test is marked `process` when it starts a process (a subprocess, a daemon, the keeper,
sshd, chromium): when it is `slow`, when its function or one of its fixtures names a way
to start one (SPAWNING_NAMES; helpers of the same module are followed), or when its file
says so in `pytestmark`. Any other test that starts a process fails at once, naming the
marker, so `-m "not process"` stays a fast suite that never goes stale.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import KeeperRunner

# Names whose use starts a process: subprocess and its kin, and the helpers built on them.
SPAWNING_NAMES = frozenset(
    {
        "subprocess",
        "Popen",
        "open_process",
        "run_process",
        "executable",  # sys.executable: a Python child
        "ProcessNarrationCapture",
        "KeeperRunner",
        "Chain",
        "spawn_program",
        "spawn_queen",
        "spawn_hive",
        "spawn_worker",
        "queen_with_hive",
        "served_for_fuzzing",
        "start_in_background",
        "keeper_into_a_left_pipe",
        "foreign_http_server",
        "imported_by",
        "link_sshd",
        "peer_machines",  # tests/support/_splithosts.py: namespaces with their sshd
        "hive_at",
        "RpcServers",  # hive/_rpc_server.py: ggml RPC servers as children
    }
)


def starts_a_process(fn: Any, seen: set[Any] | None = None) -> bool:
    """Whether `fn`, or a function of its own module that it names, names a SPAWNING_NAME."""
    seen = set() if seen is None else seen
    fn = inspect.unwrap(fn)
    if not inspect.isfunction(fn) or fn in seen:
        return False
    seen.add(fn)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    names = {
        node.id if isinstance(node, ast.Name) else node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Name | ast.Attribute)
    }
    if names & SPAWNING_NAMES:
        return True
    scope = fn.__globals__
    return any(
        starts_a_process(scope[name], seen)
        for name in names
        if getattr(scope.get(name), "__module__", None) == fn.__module__
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `process` every test that is `slow`, or whose function or fixtures (or the
    functions of their own module they call) start a process."""
    for item in items:
        if item.get_closest_marker("process") or not isinstance(item, pytest.Function):
            continue
        info = item._fixtureinfo
        fixtures = [
            d.func
            for name, defs in info.name2fixturedefs.items()
            if name != "_no_unmarked_process"  # the guard names subprocess to stop it
            for d in defs
        ]
        if item.get_closest_marker("slow") or any(
            starts_a_process(fn) for fn in [item.function, *fixtures]
        ):
            item.add_marker(pytest.mark.process)


@pytest.fixture(autouse=True)
def _no_unmarked_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked `process` cannot start one: the marker never goes stale."""
    if request.node.get_closest_marker("process"):
        return

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise AssertionError(
            f"{request.node.nodeid} starts a process ({args!r}): mark it "
            "`pytest.mark.process` (see tests/conftest.py)"
        )

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


@pytest.fixture
def anyio_backend() -> str:
    """The keeper runs anyio on asyncio (asyncssh needs it), so the tests do too."""
    return "asyncio"


@pytest.fixture(autouse=True)
def rbee_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own RBEE_HOME, so nothing touches the user's folders."""
    home = tmp_path_factory.mktemp("rbee-home")
    monkeypatch.setenv("RBEE_HOME", str(home))
    return home


@pytest.fixture
def keeper(rbee_home):
    """Run the real keeper CLI as a subprocess, as a user or a CI script would."""
    return KeeperRunner(rbee_home)


SMALL_DISK = "2m"  # tmpfs size for disk-full tests: fills in a blink, holds a queen's state


@pytest.fixture
def small_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """RBEE_HOME on its own small tmpfs, so a test can fill the disk for real (needs root,
    as here and in CI); unmounted afterwards."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    options = f"size={SMALL_DISK},mode=0700"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a disk-full test: {done.stderr.strip()}")
    monkeypatch.setenv("RBEE_HOME", str(mount))
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
