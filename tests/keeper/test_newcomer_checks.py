"""What a newcomer's first commands met (garbled errors, tracebacks, wrong hints), fixed and
proved through the real keeper CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import NOT_FOR_HELP, foreign_http_server, imported_by

WAIT_S = 30.0  # deadline for a keeper command on a loaded 2-core machine


def _keeper_with_env(keeper, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`keeper ARGS` with `env` over the fixture runner's environment (which drops some)."""
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        env={**keeper.env(), **env},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        stdin=subprocess.DEVNULL,
    )


def test_a_message_of_several_lines_keeps_its_newlines(keeper) -> None:
    """The sample `[hives.gpu1]` entry an unknown hive's error shows prints as lines, not
    joined by replacement characters."""
    result = keeper("hive", "start", "gpu1")
    assert result.returncode == 2, result.stderr
    assert "\n[hives.gpu1]\n" in result.stderr
    assert "\ufffd" not in result.stderr


def test_rbee_home_that_is_a_file_is_a_usage_error(keeper, tmp_path: Path) -> None:
    """RBEE_HOME naming a file says so in one sentence and exits 2, no traceback."""
    not_a_folder = tmp_path / "f"
    not_a_folder.touch()
    for args in (("status",), ("queen", "start"), ("run", "--", "true")):
        result = _keeper_with_env(keeper, {"RBEE_HOME": str(not_a_folder)}, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert f"RBEE_HOME {not_a_folder} is not a folder" in result.stderr, args
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_read_only_rbee_home_is_one_sentence(keeper, tmp_path: Path) -> None:
    """RBEE_HOME on a read-only file system: `queen start` says which file it cannot write
    and what to do, exit 2, no traceback and no "unexpected error"."""
    if os.geteuid() != 0:
        pytest.fail("mounting a read-only file system needs root (CI runs as root)")
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        (mount / "home").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        result = _keeper_with_env(keeper, {"RBEE_HOME": str(mount / "home")}, "queen", "start")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"keeper: cannot write {mount / 'home'}/"), result.stderr
    assert "(Read-only file system); make it writable, or point RBEE_HOME" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unexpected_error_is_one_line_without_v(keeper) -> None:
    """An error nobody foresaw (the queen's pidfile is a folder) is one line naming its type,
    exit 1; -v adds the traceback."""
    (keeper.home / "run" / "queen.pid").mkdir(parents=True)
    result = keeper("status")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("keeper: unexpected error (IsADirectoryError: ")
    assert "run again with -v to see where" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    verbose = keeper("-v", "status")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr
    assert "keeper: unexpected error (IsADirectoryError: " in verbose.stderr


def test_a_refused_token_is_named_as_refused_not_missing(keeper, free_tcp_port: int) -> None:
    """A queen answering 401 to the RBEE_TOKEN sent says the token was refused (use the one
    the queen was started with); with none sent it still says to set RBEE_TOKEN."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    started = keeper("queen", "start", "--port", str(free_tcp_port), "--token", "right")
    assert started.returncode == 0, started.stderr
    try:
        wrong = _keeper_with_env(
            keeper, {"RBEE_TOKEN": "wrong"}, "--queen-url", url, "jobs", "list"
        )
        assert wrong.returncode == 3, wrong.stderr
        assert f"the queen at {url} refused the token in RBEE_TOKEN" in wrong.stderr
        assert "the one the queen was started with" in wrong.stderr
        assert "requires a token" not in wrong.stderr
        missing = keeper("--queen-url", url, "jobs", "list")
        assert missing.returncode == 3, missing.stderr
        assert f"the queen at {url} requires a token; set RBEE_TOKEN" in missing.stderr
    finally:
        keeper("queen", "stop")


@pytest.mark.parametrize("daemon", ["queen", "hive"])
def test_a_port_held_by_another_program_says_so(
    keeper, free_tcp_port: int, tmp_path: Path, daemon: str
) -> None:
    """`queen start` and `hive start` on a port a non-rbee server holds name it as another
    program (stop it, or the same start command on a free port), not a queen to stop, and
    both exit 3."""
    args = (daemon, "start") if daemon == "queen" else (daemon, "start", "localhost")
    with foreign_http_server(free_tcp_port, tmp_path):
        result = keeper(*args, "--port", str(free_tcp_port), "--timeout", "5")
    assert result.returncode == 3, result.stderr
    assert f"port {free_tcp_port} on 127.0.0.1 is taken by another program" in result.stderr
    assert f"stop it, or use another port: `keeper {daemon} start --port " in result.stderr
    assert "not a queen" not in result.stderr and "stop that queen" not in result.stderr
    assert "start the hive with --port" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "limit"),
    [
        ("--max-tokens", "100000", "32768"),
        ("--max-tokens", "0", "32768"),
        ("--temperature", "6", "5"),
        ("--temperature", "-1", "5"),
        ("--top-p", "0", "1"),
        ("--top-p", "1.5", "1"),
        ("--top-k", "-1", "0"),
    ],
)
def test_sampling_options_beyond_the_queens_limits_are_usage_errors(
    keeper, free_tcp_port: int, flag: str, value: str, limit: str
) -> None:
    """An infer sampling option the queen would refuse (422, exit 1) is a usage error (exit 2)
    naming its range, before any queen is started or asked; its help states that range."""
    url = f"http://127.0.0.1:{free_tcp_port}"  # nothing there: never a real queen's port
    args = ("--queen-url", url, "infer", "--no-autostart", "--model", "builtin:tiny")
    result = keeper(*args, flag, value, "hi")
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for '{flag}'" in result.stderr
    assert limit in result.stderr.partition(f"Invalid value for '{flag}'")[2]
    assert not (keeper.home / "run").exists(), "a queen was started for a refused command"
    help_text = " ".join(keeper("infer", "--help").stdout.split())
    assert f"{flag} " in help_text and limit in help_text.partition(f"{flag} ")[2].split("--")[0]


def test_version_prints_the_installed_version_cheaply(keeper) -> None:
    """`keeper --version` prints `keeper <the installed rbee version>` and exits 0, loading
    no HTTP client, Rich or anyio (as cheap as --help)."""
    from importlib.metadata import version

    result, modules = imported_by(keeper, "--version")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == f"keeper {version('rbee')}\n"
    assert sorted(modules.intersection(NOT_FOR_HELP)) == []


@pytest.mark.parametrize("args", [("queen", "logs"), ("hive", "logs", "localhost")])
def test_logs_refuse_a_negative_line_count(keeper, args: tuple[str, ...]) -> None:
    """`keeper queen logs -n -5` (and the hive's) is a usage error, not silently accepted."""
    logs = keeper.home / "logs"
    logs.mkdir()
    for name in ("queen", "hive-localhost"):
        (logs / f"{name}.log").write_text("a line\n")
    assert keeper(*args, "-n", "5").returncode == 0  # with its log there, 5 lines is fine
    result = keeper(*args, "-n", "-5")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Invalid value for '-n'" in result.stderr


def test_queen_start_on_a_hives_port_names_the_hive(keeper, free_tcp_port: int) -> None:
    """`queen start --port P` where a hive listens names that hive and how to stop it
    (`keeper hive stop ALIAS`), not "the queen of another RBEE_HOME"; exit 3."""
    import socket

    with socket.socket() as sock:  # a second free port: where the hive would find a queen
        sock.bind(("127.0.0.1", 0))
        queen_port = sock.getsockname()[1]
    queen_url = f"http://127.0.0.1:{queen_port}"
    hive = keeper(
        "--queen-url", queen_url, "hive", "start", "localhost", "--port", str(free_tcp_port)
    )
    assert hive.returncode == 0, hive.stderr
    try:
        result = keeper("queen", "start", "--port", str(free_tcp_port), "--timeout", "5")
        assert result.returncode == 3, result.stderr
        assert f"port {free_tcp_port} on 127.0.0.1 is taken by hive localhost" in result.stderr
        assert f"`RBEE_HOME={keeper.home} keeper hive stop localhost`" in result.stderr
        assert "queen" not in result.stderr.partition("taken by")[2].partition(";")[0]
        assert "or use another port: `keeper queen start --port " in result.stderr
    finally:
        keeper("hive", "stop", "localhost")


def test_hive_start_on_the_queens_port_names_the_queen(keeper, free_tcp_port: int) -> None:
    """`hive start --port P` where this home's queen listens says the queen holds it (and
    gives `keeper hive start` with a free port), not "another program" to stop; exit 3."""
    started = keeper("queen", "start", "--port", str(free_tcp_port))
    assert started.returncode == 0, started.stderr
    try:
        result = keeper("hive", "start", "localhost", "--port", str(free_tcp_port))
        assert result.returncode == 3, result.stderr
        taken = f"port {free_tcp_port} on 127.0.0.1 is taken by the queen of this RBEE_HOME"
        assert taken in result.stderr
        assert "or use another port: `keeper hive start --port " in result.stderr
        assert "another program" not in result.stderr
    finally:
        keeper("queen", "stop")
